package batching

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/perfmodel"
)

// Executor runs one batch. A model instance (a runtime session) is one;
// calls to one Executor are serialised by its worker.
type Executor interface {
	Run(ctx context.Context, inputs []infergate.Tensor) ([]infergate.Tensor, error)
}

// A TimedExecutor measures its own busy time for a batch, for example as
// the CPU time of the thread that ran it when that thread yields to others
// (a bulk instance at idle OS priority is preempted by real-time work, and
// the wall time of its batches would count the preemption). The scheduler
// records that busy time, in the latency model and the ledger, instead of
// the wall time of the call.
type TimedExecutor interface {
	Executor
	RunTimed(ctx context.Context, inputs []infergate.Tensor) (outs []infergate.Tensor, busy time.Duration, err error)
}

// Outcome is the fate of a request, used as a metric label.
type Outcome string

// The outcomes.
const (
	OutcomeOK       Outcome = "ok"
	OutcomeRejected Outcome = "rejected_capacity" // queue full at admission
	OutcomeShed     Outcome = "shed"              // evicted for a higher class
	OutcomeExpired  Outcome = "expired"           // deadline passed while queued
	OutcomeCanceled Outcome = "canceled"          // client went away
	OutcomeError    Outcome = "error"             // the runtime failed
)

// BatchInfo describes one executed batch.
type BatchInfo struct {
	Instance int
	Items    int
	Requests [infergate.NumClasses]int
	ItemsBy  [infergate.NumClasses]int
	Modes    [infergate.NumClasses]infergate.Mode
	Busy     time.Duration
	// Batch1 is the measured latency of a batch of one at the time, or 0.
	Batch1 time.Duration
	Err    error
}

// Recorder receives what the scheduler measures. Metrics and the cost
// ledger implement it. Calls come from worker and handler goroutines and
// must not block.
type Recorder interface {
	RecordBatch(model string, b *BatchInfo)
	RecordRequest(model string, c infergate.Class, o Outcome, queued, compute time.Duration)
}

// Config configures a Scheduler.
type Config struct {
	Model string
	// MaxBatchSize is the model's maximum batch size; 0 for a model
	// without a batch dimension (every batch is one request).
	MaxBatchSize int
	Policies     [infergate.NumClasses]Policy
	// MaxTotalQueue bounds the requests queued across classes. When it is
	// reached, a request of a higher class evicts the newest request of
	// the lowest class queued. Optional. Defaults to the sum of the class
	// limits.
	MaxTotalQueue int
	Clock         clock.Clock
	Latency       *perfmodel.Model
	Recorder      Recorder
	Logger        *slog.Logger
	// WorkerInit, if set, runs at the start of each worker goroutine
	// (before its first batch); the engine uses it to lower the OS
	// priority of the threads that run model compute.
	WorkerInit func()
}

// Response is a request's result.
type Response struct {
	Outputs   []infergate.Tensor
	Queued    time.Duration
	Compute   time.Duration
	BatchSize int
	// Busy is the request's share of its batch's busy time (by items):
	// what the cost ledger charges it.
	Busy time.Duration
}

type request struct {
	ctx   context.Context //nolint:containedctx // a request message handed to a worker
	class infergate.Class
	// lane is the queue the request waits in: its class's own, or another
	// class's while a mode switch routes part of the class there.
	lane     infergate.Class
	inputs   []infergate.Tensor
	items    int
	enq      time.Time
	deadline time.Time // zero: none
	// expires: the deadline is enforced (its lane's timeout action is
	// reject), so Submit gives up at it even if no worker looks.
	expires bool
	done    chan result
}

type result struct {
	resp *Response
	err  error
}

// Scheduler queues the requests of one model per class, forms batches by
// each class's policy and runs them on the model's instances, higher
// classes first.
//
// # Concurrency
//
// One mutex guards the queues. Handler goroutines enqueue under it (Submit)
// and block on their request's done channel; worker goroutines, one per
// instance, form batches under it and execute them outside it. A request
// is completed exactly once, by whoever removes it from its queue.
type Scheduler struct {
	cfg      Config
	pol      [infergate.NumClasses]Policy
	clock    clock.Clock
	log      *slog.Logger
	rec      Recorder
	lat      *perfmodel.Model
	maxTotal int

	mu        sync.Mutex
	q         [infergate.NumClasses]queue
	nextTick  [infergate.NumClasses]time.Time
	total     int
	closed    bool
	instances int // regular workers
	// retire is how many regular workers are asked to stop (Retire);
	// they hand their executors over on retired.
	retire  int
	retired chan Executor
	nextID  int
	// bulkWorkers run only bulk batches (see StartBulk). While there are
	// any, regular workers leave bulk to them, except for spare slots of
	// real-time batches, for draining at Close, and for the guaranteed
	// share (SetBulkShare).
	bulkWorkers int
	// bulkShare is the share of the regular workers' busy time that bulk
	// batches may take while bulk workers exist; 0 leaves bulk to them.
	bulkShare float64
	// regBusy is the regular workers' recent busy time, decayed, in
	// seconds: [0] real-time batches, [1] bulk batches.
	regBusy   [2]float64
	regBusyAt time.Time
	// busyTotal is the regular workers' busy time since the start, in
	// seconds (wall time of their batches).
	busyTotal float64
	// lastRealtime is when the last urgent or normal request arrived.
	lastRealtime time.Time
	// lastArrival and arrivalGap are, per class, when the last request
	// arrived and the moving mean of the gaps between arrivals (seconds;
	// 0: not measured), which the adaptive policy reads.
	lastArrival [infergate.NumClasses]time.Time
	arrivalGap  [infergate.NumClasses]float64
	// aimdMax is, per AIMD class, the maximum batch size the controller
	// has set.
	aimdMax [infergate.NumClasses]int

	// running holds, per worker id, the batch it is executing.
	running map[int]running

	kick     chan struct{}
	kickBulk chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
	bufs     sync.Pool
	closeO   sync.Once
}

// New returns a scheduler. Start it with Start.
func New(cfg Config) *Scheduler {
	s := &Scheduler{cfg: cfg, clock: cfg.Clock, log: cfg.Logger, rec: cfg.Recorder, lat: cfg.Latency,
		kick: make(chan struct{}, 1), kickBulk: make(chan struct{}, 1), stop: make(chan struct{}),
		retired: make(chan Executor, 64), running: map[int]running{}}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.lat == nil {
		s.lat = perfmodel.New()
	}
	if s.rec == nil {
		s.rec = nopRecorder{}
	}
	now := s.clock.Now()
	sum := 0
	for _, c := range infergate.Classes {
		s.pol[c] = cfg.Policies[c].withDefaults(c, cfg.MaxBatchSize)
		if cfg.MaxBatchSize == 0 {
			s.pol[c].MaxBatchSize = 1
		}
		if s.pol[c].Kind == Time {
			s.nextTick[c] = now.Add(s.pol[c].BatchTimeout)
		}
		// AIMD starts at a quarter of the maximum and finds its way.
		s.aimdMax[c] = max(s.pol[c].MaxBatchSize/4, 1)
		sum += s.pol[c].MaxQueueSize
	}
	s.maxTotal = cfg.MaxTotalQueue
	if s.maxTotal == 0 {
		s.maxTotal = sum
	}
	return s
}

// Policy returns the effective policy of class c.
func (s *Scheduler) Policy(c infergate.Class) Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pol[c]
}

// SetPolicy replaces class c's policy while the scheduler runs (a mode
// switch, an operator's change). Unset fields take the defaults as in New.
// Queued requests stay queued and are formed under the new policy from the
// next batch on.
func (s *Scheduler) SetPolicy(c infergate.Class, p Policy) error {
	if c >= infergate.NumClasses {
		return infergate.Errorf(infergate.EInvalid, "unknown class %d", c)
	}
	if err := p.Validate(s.cfg.MaxBatchSize); err != nil {
		return infergate.Errorf(infergate.EInvalid, "class %s: %v", c, err)
	}
	p = p.withDefaults(c, s.cfg.MaxBatchSize)
	if s.cfg.MaxBatchSize == 0 {
		p.MaxBatchSize = 1
	}
	s.mu.Lock()
	s.pol[c] = p
	if p.Kind == Time {
		s.nextTick[c] = s.clock.Now().Add(p.BatchTimeout)
	}
	s.aimdMax[c] = max(p.MaxBatchSize/4, 1)
	if s.cfg.MaxTotalQueue == 0 {
		s.maxTotal = 0
		for _, v := range infergate.Classes {
			s.maxTotal += s.pol[v].MaxQueueSize
		}
	}
	s.mu.Unlock()
	signal(s.kick)
	signal(s.kickBulk)
	return nil
}

// Latency returns the scheduler's live latency model.
func (s *Scheduler) Latency() *perfmodel.Model { return s.lat }

// Start runs one worker per executor until Close. It may be called again
// while the scheduler runs, to add instances.
func (s *Scheduler) Start(executors ...Executor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range executors {
		id := s.nextID
		s.nextID++
		s.instances++
		s.wg.Add(1)
		go s.worker(id, e, false)
	}
}

// Instances returns the number of regular workers, not counting those
// asked to retire.
func (s *Scheduler) Instances() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.instances - s.retire
}

// Retire asks one regular worker to stop once its current batch is done
// and returns its executor when it has stopped, for the caller to close.
// Queued requests stay queued for the other workers: nothing accepted is
// dropped. At least one regular worker always remains. Retire waits until
// the worker stops or ctx ends; a worker asked to retire stops anyway.
func (s *Scheduler) Retire(ctx context.Context) (Executor, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, infergate.Errorf(infergate.EUnavailable, "model %s is shutting down", s.cfg.Model)
	}
	if s.instances-s.retire <= 1 {
		s.mu.Unlock()
		return nil, infergate.Errorf(infergate.EConflict, "model %s keeps at least one instance", s.cfg.Model)
	}
	s.retire++
	s.mu.Unlock()
	// Wake an idle worker to take the retirement; a busy one takes it
	// after its batch.
	signal(s.kick)
	select {
	case e := <-s.retired:
		return e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// StartBulk runs one bulk-only worker per executor until Close. Bulk
// workers take only bulk batches, at the bulk policy's full size; the
// executors are meant to run at idle OS priority on the same cores as the
// regular instances, so that bulk work uses exactly the CPU time real-time
// work leaves (see engine). While bulk workers exist, regular workers take
// bulk requests only to fill spare slots of real-time batches (when the
// class's policy says FillWithBulk, and only as many as fit in the batch's
// measured latency), when closing, and up to the share SetBulkShare grants.
func (s *Scheduler) StartBulk(executors ...Executor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range executors {
		id := s.nextID
		s.nextID++
		s.bulkWorkers++
		s.wg.Add(1)
		go s.worker(id, e, true)
	}
}

// SetBulkShare lets regular workers spend up to share (0..1) of their busy
// time on bulk batches, on top of the bulk workers: the guaranteed share a
// batch job gets when it would otherwise miss its completion window. It has
// no effect without bulk workers, where regular workers run bulk batches
// whenever real-time work leaves them idle.
func (s *Scheduler) SetBulkShare(share float64) {
	s.mu.Lock()
	s.bulkShare = min(max(share, 0), 1)
	s.mu.Unlock()
	signal(s.kick)
	signal(s.kickBulk)
}

// BatchLimit returns the largest batch class c forms now: its policy's
// maximum, or the AIMD controller's current one.
func (s *Scheduler) BatchLimit(c infergate.Class) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limitLocked(c)
}

func (s *Scheduler) limitLocked(c infergate.Class) int {
	if s.pol[c].Kind == AIMD {
		return s.aimdMax[c]
	}
	return s.pol[c].MaxBatchSize
}

// aimdLocked adjusts class c's AIMD maximum after a batch whose oldest
// request of the class waited queued and ran for compute.
func (s *Scheduler) aimdLocked(c infergate.Class, latency time.Duration) {
	if latency <= s.pol[c].TargetLatency {
		s.aimdMax[c] = min(s.aimdMax[c]+1, s.pol[c].MaxBatchSize)
	} else {
		s.aimdMax[c] = max(s.aimdMax[c]/2, 1)
	}
}

// BulkShare returns the share set by SetBulkShare.
func (s *Scheduler) BulkShare() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bulkShare
}

// arrivalAlpha is the weight of a new gap in the moving mean of a class's
// inter-arrival gaps.
const arrivalAlpha = 0.05

// regBusyHalfLife is the half-life of the regular workers' busy-time
// accounts that the bulk share is measured on.
const regBusyHalfLife = 2 * time.Second

// addRegBusyLocked adds a regular worker's batch to the decayed accounts.
func (s *Scheduler) addRegBusyLocked(now time.Time, bulk bool, busy time.Duration) {
	if !s.regBusyAt.IsZero() {
		if dt := now.Sub(s.regBusyAt); dt > 0 {
			f := math.Exp2(-dt.Seconds() / regBusyHalfLife.Seconds())
			s.regBusy[0] *= f
			s.regBusy[1] *= f
		}
	}
	s.regBusyAt = now
	s.busyTotal += busy.Seconds()
	i := 0
	if bulk {
		i = 1
	}
	s.regBusy[i] += busy.Seconds()
}

// bulkShareLeftLocked reports whether regular workers may run a bulk batch
// under the guaranteed share.
func (s *Scheduler) bulkShareLeftLocked() bool {
	if s.bulkShare <= 0 {
		return false
	}
	total := s.regBusy[0] + s.regBusy[1]
	return total == 0 || s.regBusy[1]/total < s.bulkShare
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

type running struct {
	start time.Time
	items int
}

// Stall thresholds: a batch has stalled once it has run StallFactor times
// its measured latency, and at least StallFloor.
const (
	StallFactor = 20
	StallFloor  = time.Second
)

// Stalled reports whether a worker has been executing one batch for far
// longer than the latency model says it takes (see StallFactor): a hung
// runtime. The engine reports the server not ready while it is.
func (s *Scheduler) Stalled() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	for id, r := range s.running {
		limit := StallFloor
		if est, ok := s.lat.Estimate(r.items); ok {
			limit = max(limit, StallFactor*est)
		}
		if d := now.Sub(r.start); d > limit {
			return true, fmt.Sprintf("instance %d has run a batch of %d for %s (limit %s)", id, r.items, d.Round(time.Millisecond), limit)
		}
	}
	return false, ""
}

// BusySeconds returns the regular workers' busy time since the start: the
// wall time of the batches they ran, summed over workers.
func (s *Scheduler) BusySeconds() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busyTotal
}

// OldestWait returns how long the oldest request queued in the urgent and
// normal lanes has waited (0 when none is queued).
func (s *Scheduler) OldestWait() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	var d time.Duration
	for _, c := range [...]infergate.Class{infergate.ClassUrgent, infergate.ClassNormal} {
		if s.q[c].len() > 0 {
			d = max(d, now.Sub(s.q[c].front().enq))
		}
	}
	return d
}

// QueueLen returns the number of requests queued in class c.
func (s *Scheduler) QueueLen(c infergate.Class) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.q[c].len()
}

// Close stops admission, lets the workers finish what is queued, and waits
// for them. It returns early with ctx's error, failing what is still queued.
func (s *Scheduler) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.closeO.Do(func() { close(s.stop) })
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for _, c := range infergate.Classes {
		for s.q[c].len() > 0 {
			r := s.q[c].popFront()
			s.total--
			s.finishLocked(r, infergate.Errorf(infergate.EUnavailable, "server shutting down"), OutcomeRejected)
		}
	}
	s.mu.Unlock()
	return ctx.Err()
}

// Submit queues a request of items items (the batch dimension of inputs)
// and waits for its result. inputs must already be validated against the
// model. timeout overrides the class's default timeout when > 0.
//
// Errors are *infergate.Error: EOverloaded (with RetryAfterSeconds) when the
// queue is full or the request was shed, EDeadline when its timeout passed
// before it ran, ECanceled when ctx ended, EUnavailable after Close, and
// EInternal when the runtime failed.
func (s *Scheduler) Submit(ctx context.Context, c infergate.Class, inputs []infergate.Tensor, items int, timeout time.Duration) (*Response, error) {
	return s.SubmitLane(ctx, c, c, inputs, items, timeout)
}

// SubmitLane is Submit for a request of class c served in the queue of
// class lane, under that queue's policy and priority (and so in its mode):
// how a mode switch moves part of a class's traffic. Metrics count the
// request under c; the cost ledger under c and the lane's mode. The
// request's default timeout is its own class's.
func (s *Scheduler) SubmitLane(ctx context.Context, c, lane infergate.Class, inputs []infergate.Tensor, items int, timeout time.Duration) (*Response, error) {
	if c >= infergate.NumClasses || lane >= infergate.NumClasses {
		return nil, infergate.Errorf(infergate.EInvalid, "unknown class %d", max(c, lane))
	}
	now := s.clock.Now()
	r := &request{ctx: ctx, class: c, lane: lane, inputs: inputs, items: max(items, 1), enq: now, done: make(chan result, 1)}
	bulkLane, err := s.admit(r, timeout)
	if err != nil {
		s.rec.RecordRequest(s.cfg.Model, c, OutcomeRejected, 0, 0)
		return nil, err
	}
	// The deadline holds even when no worker comes (all of them stuck in
	// a hung runtime): a queued request expires at it, and one whose
	// batch is running gets as long again before it is given up.
	var expiry <-chan time.Time
	if r.expires {
		t := s.clock.NewTimer(r.deadline.Sub(now))
		defer t.Stop()
		expiry = t.C()
	}
	if bulkLane {
		signal(s.kickBulk)
	} else {
		signal(s.kick)
		if c == infergate.ClassBulk {
			// Regular workers may decline it (no share left); the bulk
			// workers must hear of it too.
			signal(s.kickBulk)
		}
	}
	for waited := false; ; {
		select {
		case res := <-r.done:
			return res.resp, res.err
		case <-ctx.Done():
		case <-expiry:
			s.mu.Lock()
			if s.q[lane].remove(r) {
				s.total--
				s.mu.Unlock()
				s.rec.RecordRequest(s.cfg.Model, c, OutcomeExpired, s.clock.Now().Sub(r.enq), 0)
				return nil, infergate.Errorf(infergate.EDeadline, "request timed out after %s in the %s queue", r.deadline.Sub(r.enq), lane)
			}
			s.mu.Unlock()
			if !waited {
				waited = true
				t := s.clock.NewTimer(r.deadline.Sub(r.enq))
				defer t.Stop()
				expiry = t.C()
				continue
			}
			s.rec.RecordRequest(s.cfg.Model, c, OutcomeExpired, s.clock.Now().Sub(r.enq), 0)
			return nil, infergate.Errorf(infergate.EDeadline, "request timed out: its batch has run for more than its whole timeout (%s); the runtime may be hung", r.deadline.Sub(r.enq))
		}
		break
	}
	// The client is gone. Take the request out of its queue if it is
	// still there; a worker that already took it drops the result.
	s.mu.Lock()
	if s.q[lane].remove(r) {
		s.total--
		s.mu.Unlock()
		s.rec.RecordRequest(s.cfg.Model, c, OutcomeCanceled, s.clock.Now().Sub(r.enq), 0)
	} else {
		s.mu.Unlock()
	}
	return nil, canceledErr(ctx)
}

func canceledErr(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, context.DeadlineExceeded) {
		return &infergate.Error{Code: infergate.EDeadline, Message: "request deadline exceeded", Err: cause}
	}
	return &infergate.Error{Code: infergate.ECanceled, Message: "request canceled", Err: cause}
}

// admit queues r. bulkLane reports that r is for the bulk workers alone
// to pick up (a bulk request while bulk workers exist and no share of the
// regular workers is granted).
func (s *Scheduler) admit(r *request, timeout time.Duration) (bulkLane bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, infergate.Errorf(infergate.EUnavailable, "model %s is shutting down", s.cfg.Model)
	}
	if timeout <= 0 {
		timeout = s.pol[r.class].DefaultTimeout
	}
	if timeout > 0 {
		r.deadline = r.enq.Add(timeout)
		r.expires = s.pol[r.lane].TimeoutAction == Reject
	}
	c := r.lane
	bulkLane = c == infergate.ClassBulk && s.bulkWorkers > 0 && s.bulkShare == 0
	if lim := s.pol[c].MaxQueueSize; lim > 0 && s.q[c].len() >= lim {
		return false, s.overloadedLocked(c, "%s queue of model %s is full (%d requests)", c, s.cfg.Model, lim)
	}
	if wait, ok := s.drainTimeLocked(c, r.items); ok && !r.deadline.IsZero() && s.pol[c].TimeoutAction == Reject &&
		r.enq.Add(wait).After(r.deadline) {
		// It would expire in the queue: say so now, while the client can
		// still go elsewhere, instead of holding it until its deadline.
		return false, s.overloadedLocked(c, "%s queue of model %s: the measured time to serve the work ahead (%s) exceeds the request's timeout (%s)",
			c, s.cfg.Model, wait.Round(time.Millisecond), r.deadline.Sub(r.enq))
	}
	if s.maxTotal > 0 && s.total >= s.maxTotal {
		// Shed the newest request of the lowest class below c.
		shed := false
		for v := infergate.NumClasses - 1; v > int(c); v-- {
			if s.q[v].len() > 0 {
				victim := s.q[v].popBack()
				s.total--
				err := s.overloadedLocked(infergate.Class(v), "shed for higher-priority traffic on model %s", s.cfg.Model)
				s.finishLocked(victim, err, OutcomeShed)
				shed = true
				break
			}
		}
		if !shed {
			return false, s.overloadedLocked(c, "queues of model %s are full (%d requests)", s.cfg.Model, s.maxTotal)
		}
	}
	s.q[c].pushBack(r)
	s.total++
	if c != infergate.ClassBulk {
		s.lastRealtime = r.enq
	}
	if last := s.lastArrival[c]; !last.IsZero() {
		// An idle spell says only that the next request is not expected
		// within the delay bound; capped, it does not drag the mean for
		// hundreds of arrivals after traffic resumes.
		gap := min(max(r.enq.Sub(last).Seconds(), 0), 2*max(s.pol[c].MaxQueueDelay, time.Millisecond).Seconds())
		if s.arrivalGap[c] == 0 {
			s.arrivalGap[c] = gap
		} else {
			s.arrivalGap[c] += arrivalAlpha * (gap - s.arrivalGap[c])
		}
	}
	s.lastArrival[c] = r.enq
	return bulkLane, nil
}

// drainTimeLocked estimates, from the live latency model, how long until
// a request of n items of class c would be answered: the queued items of
// its own and higher classes plus its own, run in full batches of the
// class's maximum size over all instances. ok is false before anything
// has been measured.
func (s *Scheduler) drainTimeLocked(c infergate.Class, n int) (time.Duration, bool) {
	mb := s.pol[c].MaxBatchSize
	est, ok := s.lat.Estimate(mb)
	workers, from := s.instances, 0
	if c == infergate.ClassBulk && s.bulkWorkers > 0 {
		// Bulk workers run bulk alone; regular workers join in only under
		// a guaranteed share.
		workers, from = s.bulkWorkers, int(infergate.ClassBulk)
		if s.bulkShare > 0 {
			workers, from = s.bulkWorkers+s.instances, 0
		}
	}
	if !ok || workers == 0 {
		return 0, false
	}
	items := n
	for v := from; v <= int(c); v++ {
		items += s.q[v].items
	}
	batches := (items + mb - 1) / mb
	// Batches run in parallel on the instances; the last one ends after
	// ceil(batches / instances) rounds.
	rounds := (batches + workers - 1) / workers
	return time.Duration(rounds) * est, true
}

// overloadedLocked builds a 429 error whose Retry-After is the measured
// time to drain what is queued at and above class c.
func (s *Scheduler) overloadedLocked(c infergate.Class, format string, args ...any) error {
	e := infergate.Errorf(infergate.EOverloaded, format, args...)
	e.RetryAfterSeconds = 1
	if d, ok := s.drainTimeLocked(c, 0); ok {
		e.RetryAfterSeconds = int(min(max(math.Ceil(d.Seconds()), 1), 60))
	}
	return e
}

// finishLocked completes a request that is out of its queue with an error.
// It is recorded before the caller hears of it, so that metrics read after
// a response already count it.
func (s *Scheduler) finishLocked(r *request, err error, o Outcome) {
	s.rec.RecordRequest(s.cfg.Model, r.class, o, s.clock.Now().Sub(r.enq), 0)
	r.done <- result{err: err}
}

type batch struct {
	reqs  []*request
	items int
}

func (s *Scheduler) worker(id int, e Executor, bulkOnly bool) {
	defer s.wg.Done()
	if s.cfg.WorkerInit != nil {
		s.cfg.WorkerInit()
	}
	kick := s.kick
	if bulkOnly {
		kick = s.kickBulk
	}
	ctx := context.Background()
	var b batch
	var dueAt time.Time // when the timer that woke this worker was due
	for {
		s.mu.Lock()
		if !bulkOnly && s.retire > 0 && !s.closed {
			s.retire--
			s.instances--
			s.mu.Unlock()
			// Pass on a kick this worker may have taken for work.
			signal(s.kick)
			s.retired <- e
			return
		}
		now := s.clock.Now()
		wake := s.formLocked(now, &b, bulkOnly)
		if len(b.reqs) > 0 {
			s.running[id] = running{start: now, items: b.items}
		}
		if !dueAt.IsZero() && len(b.reqs) > 0 {
			s.lat.ObserveDispatch(s.clock.Now().Sub(dueAt))
		}
		dueAt = time.Time{}
		nBulk := s.q[infergate.ClassBulk].len()
		closedEmpty := s.closed && (s.total == 0 || (bulkOnly && nBulk == 0))
		more := s.total > nBulk || (nBulk > 0 && (s.bulkWorkers == 0 || s.bulkShare > 0))
		moreBulk := nBulk > 0
		s.mu.Unlock()
		if len(b.reqs) > 0 {
			// Let another idle worker look at what is left.
			if more {
				signal(s.kick)
			}
			if moreBulk {
				signal(s.kickBulk)
			}
			s.execute(ctx, id, e, &b, bulkOnly)
			s.mu.Lock()
			delete(s.running, id)
			s.mu.Unlock()
			continue
		}
		if closedEmpty {
			// Wake the next worker so that it sees the queues are empty.
			signal(s.kick)
			signal(s.kickBulk)
			return
		}
		var timerC <-chan time.Time
		var t clock.Timer
		if !wake.IsZero() {
			t = s.clock.NewTimer(wake.Sub(now))
			timerC = t.C()
		}
		select {
		case <-kick:
		case <-timerC:
			dueAt = wake
		case <-s.stop:
			// Closed: formLocked now flushes every queue regardless of
			// policy, and the worker returns once they are empty.
		}
		if t != nil {
			t.Stop()
		}
	}
}
