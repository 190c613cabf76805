// Package runner executes batch jobs durably: it leases the items of
// in_progress batches from a jobs.Store, runs each through an Executor (the
// server's bulk lane), records the outcomes with CompleteItems, and drives
// batches through finalizing, cancelling and expiry to their terminal
// status, writing the output and error files.
//
// Exactly-once recording rests on the store (see package jobs): the runner
// only reports outcomes of items it holds a lease on, through
// CompleteItems, and never writes results any other way. Inference itself
// may run more than once for an item (a lease that expired, a crash before
// the result was committed).
//
// A crash while finalizing leaves the batch in finalizing (or cancelling);
// the next runner writes the files again and finishes it. The files
// written by the crashed attempt are left behind, unreferenced.
package runner

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"
	"github.com/infergate/infergate/internal/openai"
)

// Executor runs items' v2 inference request bodies against a model through
// the server's bulk lane.
//
// Execute runs every body of bodies (one item each; the server may run
// several as one request) and calls done(i, reply) exactly once for each
// index i, from any goroutine, as soon as item i has its answer; it returns
// after the last call. A reply is what POST /v2/models/{model}/infer would
// answer the body alone: Status and Body. Err != nil means a transient
// failure (overload, unavailable, deadline): the item is retried later. A
// 4xx status is permanent; a 5xx status is retried like an error, and
// recorded with its response once the attempts are used up.
type Executor interface {
	Execute(ctx context.Context, model string, bodies [][]byte, done func(i int, r Reply))
}

// Reply is the answer to one item.
type Reply struct {
	Status int
	Body   []byte
	Err    error
	// CostUSD is the item's share of the measured busy time of the
	// batches that ran it, at the instance price: what the cost ledger
	// charged for it. 0 when not known.
	CostUSD float64
}

// Config configures a Runner. Store and Exec are required; the rest have
// defaults.
type Config struct {
	Store  jobs.Store
	Exec   Executor
	Clock  clock.Clock  // default clock.Real
	Logger *slog.Logger // default slog.Default()

	// Owner names this runner in item leases; it must be unique per
	// process start (default: hostname-pid-random).
	Owner string
	// MaxLeases is how many times an item may be leased before it is
	// failed without running, as a poison pill that kills its holders
	// (default max(10, 3*MaxAttempts)).
	MaxLeases int
	// LeaseBatch is the most items leased per call (default 64).
	LeaseBatch int
	// LeaseFor is the lease duration (default 2m). An item's execution is
	// given at most this long.
	LeaseFor time.Duration
	// Concurrency is the most items in flight at once, across batches
	// (default 256).
	Concurrency int
	// MaxAttempts is how many times an item is tried before a transient
	// failure becomes final (default 3).
	MaxAttempts int
	// RetryDelay is the delay before the first retry (default 1s); it
	// doubles with each attempt, up to MaxRetryDelay (default 5m).
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// RetryJitter is the relative jitter of retry delays, the delay being
	// multiplied by a random factor in [1-RetryJitter, 1+RetryJitter]
	// (default 0.2; a negative value means none).
	RetryJitter float64
	// PollInterval is how often the runner looks for active batches and
	// leasable items (default 200ms); Notify wakes it sooner.
	PollInterval time.Duration
	// ShutdownGrace is how long in-flight items get to finish when Run's
	// context ends (default 5s), measured on the wall clock.
	ShutdownGrace time.Duration
	// ModelOf maps a batch endpoint to the model to run
	// (default: openai.ParseEndpoint's model).
	ModelOf func(endpoint string) (string, error)
	// RateWindow is the window over which Rate measures completions
	// (default 30s).
	RateWindow time.Duration
	// Pace, if set, is told the share of capacity (0..1) the bulk lane of
	// model must be guaranteed: GuaranteedShare while one of the model's
	// batches is projected to miss its completion window at the measured
	// rate, 0 once none is (see pace.go). It is called from the runner's
	// polling loop, only when the share changes.
	Pace func(model string, share float64)
	// GuaranteedShare is the share Pace asks for, the configurable ceiling
	// of what bulk may take from real-time work (default 0.5).
	GuaranteedShare float64
	// ThreadInit, if set, runs first in the runner's own goroutines: the
	// polling loop (leasing) and the collector (recording results), which
	// do its store work. The server uses it to move them to idle-priority
	// OS threads, so that the job's bookkeeping, like its compute, uses the
	// CPU time real-time work leaves.
	ThreadInit func()
}

// Runner runs batch jobs. Create it with New and start it with Run.
type Runner struct {
	cfg   Config
	store jobs.Store
	clk   clock.Clock
	log   *slog.Logger

	notify  chan struct{} // Notify: 1-buffered, coalescing
	wake    chan struct{} // slots freed: 1-buffered, coalescing
	sem     chan struct{} // one token per item in flight
	results chan outcome  // item outcomes for the collector
	used    atomic.Bool

	mu       sync.Mutex
	terminal map[string]jobs.Status // batches this runner moved to finalizing, and the status they end in
	shares   map[string]float64     // the share last passed to Pace, per model (polling loop only)
	paceQ    chan paceCall          // to paceLoop
	rates    map[string]*rateWindow
	rng      *rand.Rand
	// storeDown is set while recording outcomes fails with an
	// unavailable store; leasing waits for it to clear.
	storeDown atomic.Bool
	backlog   map[string][]Backlog // per model, as of the last poll
}

type outcome struct {
	res  jobs.ItemResult
	done bool // false: dropped (shutdown), only the slot is freed
}

// New checks cfg, fills in its defaults and returns a Runner.
func New(cfg Config) (*Runner, error) {
	if cfg.Store == nil {
		return nil, errors.New("runner: Config.Store is required")
	}
	if cfg.Exec == nil {
		return nil, errors.New("runner: Config.Exec is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "runner"
		}
		cfg.Owner = fmt.Sprintf("%s-%d-%08x", host, os.Getpid(), rand.Uint32())
	}
	if cfg.LeaseBatch <= 0 {
		cfg.LeaseBatch = 64
	}
	if cfg.LeaseFor <= 0 {
		cfg.LeaseFor = 2 * time.Minute
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.MaxLeases <= 0 {
		cfg.MaxLeases = max(10, 3*cfg.MaxAttempts)
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	if cfg.MaxRetryDelay <= 0 {
		cfg.MaxRetryDelay = 5 * time.Minute
	}
	if cfg.RetryJitter == 0 {
		cfg.RetryJitter = 0.2
	}
	if cfg.RetryJitter < 0 {
		cfg.RetryJitter = 0
	}
	if cfg.RetryJitter > 1 {
		cfg.RetryJitter = 1
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 5 * time.Second
	}
	if cfg.GuaranteedShare <= 0 || cfg.GuaranteedShare > 1 {
		cfg.GuaranteedShare = 0.5
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = 30 * time.Second
	}
	if cfg.ModelOf == nil {
		cfg.ModelOf = func(endpoint string) (string, error) {
			model, _, ok := openai.ParseEndpoint(endpoint)
			if !ok {
				return "", infergate.Errorf(infergate.EInvalid, "unsupported batch endpoint %q", endpoint)
			}
			return model, nil
		}
	}
	return &Runner{
		cfg:      cfg,
		store:    cfg.Store,
		clk:      cfg.Clock,
		log:      cfg.Logger.With("owner", cfg.Owner),
		notify:   make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		sem:      make(chan struct{}, cfg.Concurrency),
		results:  make(chan outcome, cfg.Concurrency),
		terminal: map[string]jobs.Status{},
		shares:   map[string]float64{},
		paceQ:    make(chan paceCall, 64),
		rates:    map[string]*rateWindow{},
		rng:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}, nil
}

// Owner returns the lease owner name of the runner.
func (r *Runner) Owner() string { return r.cfg.Owner }

// Notify tells the runner that a batch was created or cancelled, so that
// it looks at once instead of at its next poll. It never blocks.
func (r *Runner) Notify() { signal(r.notify) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run drives batches until ctx ends. It then stops leasing, gives the
// items in flight up to ShutdownGrace to finish and records them, gives
// back its remaining leases (ReleaseLeases) and returns nil. Store errors
// along the way are logged and retried at the next poll. A Runner runs
// once: a second call returns an error (start a new Runner, with a new
// Owner, instead).
func (r *Runner) Run(ctx context.Context) error {
	if !r.used.CompareAndSwap(false, true) {
		return errors.New("runner: Run called twice")
	}
	paceDone := make(chan struct{})
	go func() {
		defer close(paceDone)
		r.paceLoop()
	}()
	defer func() {
		close(r.paceQ)
		<-paceDone
	}()
	if r.cfg.ThreadInit != nil {
		r.cfg.ThreadInit()
	}

	// Items and store writes outlive ctx for the shutdown grace.
	bg := context.WithoutCancel(ctx)
	execCtx, cancelExec := context.WithCancel(bg)
	defer cancelExec()

	var items sync.WaitGroup
	collectorDone := make(chan struct{})
	stopCollector := make(chan struct{})
	go func() {
		defer close(collectorDone)
		if r.cfg.ThreadInit != nil {
			r.cfg.ThreadInit()
		}
		r.collect(bg, stopCollector)
	}()

	for {
		r.tick(ctx, execCtx, &items)
		t := r.clk.NewTimer(r.cfg.PollInterval)
		select {
		case <-ctx.Done():
		case <-r.notify:
		case <-r.wake:
		case <-t.C():
		}
		t.Stop()
		if ctx.Err() != nil {
			break
		}
	}

	// Shutdown: no more leases; let the items in flight finish.
	finished := make(chan struct{})
	go func() { items.Wait(); close(finished) }()
	grace := time.NewTimer(r.cfg.ShutdownGrace)
	select {
	case <-finished:
	case <-grace.C:
		cancelExec()
		// An Executor that honours its context returns promptly now; one
		// that does not is abandoned (its late result is dropped, and its
		// lease released below).
		short := time.NewTimer(r.cfg.ShutdownGrace / 5)
		select {
		case <-finished:
		case <-short.C:
			r.log.Warn("runner: items still running after the shutdown grace; abandoning them")
		}
		short.Stop()
	}
	grace.Stop()
	close(stopCollector)
	<-collectorDone

	sctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	n, err := r.store.ReleaseLeases(sctx, r.cfg.Owner)
	if err != nil {
		r.log.Error("runner: releasing leases", "err", err)
	} else if n > 0 {
		r.log.Info("runner: released leases", "items", n)
	}
	return nil
}

// tick looks at every active batch once, and then leases more for the
// in-progress batches whose lease came back full, a lease each per round,
// until the free slots or their due items run out: batches share the slots
// a tick fills.
func (r *Runner) tick(ctx, execCtx context.Context, items *sync.WaitGroup) {
	batches, err := r.store.ActiveBatches(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("runner: listing active batches", "err", err)
		}
		return
	}
	r.forget(batches)
	r.noteBacklog(batches)
	r.pace(r.clk.Now(), batches)
	type leasing struct {
		b     *jobs.Batch
		model string
	}
	var more []leasing
	for _, b := range batches {
		if ctx.Err() != nil {
			return
		}
		var err error
		switch b.Status {
		case jobs.StatusInProgress:
			var model string
			var full bool
			if model, full, err = r.inProgress(ctx, execCtx, items, b); full {
				more = append(more, leasing{b, model})
			}
		case jobs.StatusFinalizing:
			err = r.finalizing(ctx, b)
		case jobs.StatusCancelling:
			err = r.cancelling(ctx, b)
		default: // validating belongs to the HTTP layer
		}
		r.logDrive(ctx, b, err)
	}
	for len(more) > 0 && ctx.Err() == nil {
		next := more[:0]
		for _, l := range more {
			full, err := r.lease(ctx, execCtx, items, l.b, l.model)
			r.logDrive(ctx, l.b, err)
			if full {
				next = append(next, l)
			}
		}
		more = next
	}
}

// logDrive logs an error driving batch b, unless ctx ended or another
// actor moved the batch meanwhile (it is looked at again next time).
func (r *Runner) logDrive(ctx context.Context, b *jobs.Batch, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	if infergate.ErrorCode(err) == infergate.EConflict {
		r.log.Debug("runner: batch changed under us", "batch", b.ID, "err", err)
		return
	}
	r.log.Error("runner: driving batch", "batch", b.ID, "status", b.Status, "err", err)
}

// inProgress drives an in_progress batch: to finalizing once it has
// expired or every item is finished, else a lease of its due items (see
// lease), returning the model it runs on and whether the lease was full.
func (r *Runner) inProgress(ctx, execCtx context.Context, items *sync.WaitGroup, b *jobs.Batch) (model string, full bool, err error) {
	now := r.clk.Now()
	if !b.ExpiresAt.IsZero() && !now.Before(b.ExpiresAt) {
		if err := r.store.UpdateBatchStatus(ctx, b.ID, jobs.StatusInProgress, jobs.StatusFinalizing, now); err != nil {
			return "", false, err
		}
		r.setTerminal(b.ID, jobs.StatusExpired)
		b.Status, b.FinalizingAt = jobs.StatusFinalizing, now
		return "", false, r.finalizing(ctx, b)
	}
	if b.Completed+b.Failed >= b.Total {
		if err := r.store.UpdateBatchStatus(ctx, b.ID, jobs.StatusInProgress, jobs.StatusFinalizing, now); err != nil {
			return "", false, err
		}
		r.setTerminal(b.ID, jobs.StatusCompleted)
		b.Status, b.FinalizingAt = jobs.StatusFinalizing, now
		return "", false, r.finalizing(ctx, b)
	}
	model, err = r.cfg.ModelOf(b.Endpoint)
	if err != nil {
		// No item of the batch can run: fail it as a whole.
		return "", false, r.store.FinishBatch(ctx, b.ID, jobs.StatusInProgress, jobs.StatusFailed, now, jobs.Outcome{
			Errors: []jobs.LineError{{Code: "invalid_endpoint", Message: infergate.ErrorMessage(err)}},
		})
	}

	full, err = r.lease(ctx, execCtx, items, b, model)
	return model, full, err
}

// lease leases up to LeaseBatch of b's due items into free slots and
// starts them, and reports whether it got a full lease (more may be due).
func (r *Runner) lease(ctx, execCtx context.Context, items *sync.WaitGroup, b *jobs.Batch, model string) (full bool, err error) {
	if r.storeDown.Load() || ctx.Err() != nil {
		// Outcomes cannot be recorded (a full disk, say): leasing more
		// would only spend the items' attempts. Wait for the collector to
		// get through.
		return false, nil
	}
	// Reserve slots, then lease as many items.
	n := 0
	for n < r.cfg.LeaseBatch {
		select {
		case r.sem <- struct{}{}:
			n++
			continue
		default:
		}
		break
	}
	if n == 0 {
		return false, nil
	}
	leased, err := r.store.LeaseItems(ctx, b.ID, r.cfg.Owner, n, r.cfg.LeaseFor)
	for range n - len(leased) {
		<-r.sem
	}
	if err != nil {
		return false, err
	}
	if len(leased) > 0 {
		items.Add(1)
		go func() {
			defer items.Done()
			r.execute(execCtx, model, leased)
		}()
	}
	return len(leased) == r.cfg.LeaseBatch, nil
}

// execute runs leased items (of one batch) together and sends each one's
// outcome to the collector as soon as it has it: exactly one per item.
func (r *Runner) execute(execCtx context.Context, model string, leased []*jobs.Item) {
	run := make([]*jobs.Item, 0, len(leased))
	for _, it := range leased {
		if it.Attempts > r.cfg.MaxLeases {
			// Leased far more often than it was retried (its holders died
			// or overran their leases): a poison pill, not run again. A
			// lease lost to a killed process counts as an attempt in the
			// store, so this allowance is separate from, and larger than,
			// MaxAttempts.
			r.results <- outcome{res: jobs.ItemResult{BatchID: it.BatchID, Seq: it.Seq, State: jobs.ItemFailed,
				Error: fmt.Sprintf("%s: abandoned after %d attempts", infergate.EInternal, it.Attempts-1)}, done: true}
			continue
		}
		run = append(run, it)
	}
	if len(run) == 0 {
		return
	}
	bodies := make([][]byte, len(run))
	for i, it := range run {
		bodies[i] = it.Body
	}
	answered := make([]atomic.Bool, len(run))
	ctx, cancel := context.WithTimeout(execCtx, r.cfg.LeaseFor)
	r.cfg.Exec.Execute(ctx, model, bodies, func(i int, rep Reply) {
		if i < 0 || i >= len(run) || answered[i].Swap(true) {
			r.log.Error("runner: the executor answered an item it was not given, or twice", "index", i, "items", len(run))
			return
		}
		r.results <- r.outcome(execCtx, run[i], rep)
	})
	cancel()
	for i, it := range run {
		if answered[i].CompareAndSwap(false, true) {
			// An executor that forgot one: its slot must still be freed.
			r.results <- r.outcome(execCtx, it, Reply{Err: infergate.Errorf(infergate.EInternal, "the executor gave no answer")})
		}
	}
}

// outcome turns an item's reply into its outcome.
func (r *Runner) outcome(execCtx context.Context, it *jobs.Item, rep Reply) outcome {
	status, resp, err := rep.Status, rep.Body, rep.Err
	if execCtx.Err() != nil && (err != nil || status == 0) {
		// Shut down before it finished: leave the item to ReleaseLeases.
		return outcome{}
	}
	res := jobs.ItemResult{BatchID: it.BatchID, Seq: it.Seq}
	if c := rep.CostUSD; c > 0 && !math.IsInf(c, 1) {
		// The store refuses a bad cost, with every outcome recorded
		// alongside: an executor's bad figure costs only the figure.
		res.CostUSD = c
	}
	switch {
	case err == nil && status >= 200 && status < 300:
		res.State, res.StatusCode, res.Result = jobs.ItemDone, status, resp
		return outcome{res: res, done: true}
	case err == nil && status >= 400 && status < 500:
		res.State, res.StatusCode, res.Result = jobs.ItemFailed, status, resp
		res.Error = bodyMessage(status, resp)
		return outcome{res: res, done: true}
	}
	// Transient: an error, or a status that is neither success nor a
	// client error.
	var msg string
	if err != nil {
		msg = errorString(err)
	} else {
		msg = infergate.EInternal + ": " + bodyMessage(status, resp)
	}
	if it.Attempts >= r.cfg.MaxAttempts {
		res.State, res.Error = jobs.ItemFailed, msg
		if err == nil && status > 0 {
			res.StatusCode, res.Result = status, resp
		}
		return outcome{res: res, done: true}
	}
	res.State, res.Error = jobs.ItemPending, msg
	res.NextAttemptAt = r.clk.Now().Add(r.retryDelay(it.Attempts))
	return outcome{res: res, done: true}
}

// retryDelay is the delay after the attempt-th attempt failed:
// RetryDelay*2^(attempt-1) with jitter, at most MaxRetryDelay.
func (r *Runner) retryDelay(attempt int) time.Duration {
	d := r.cfg.RetryDelay
	for i := 1; i < attempt && d < r.cfg.MaxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, r.cfg.MaxRetryDelay)
	if j := r.cfg.RetryJitter; j > 0 {
		r.mu.Lock()
		f := 1 - j + 2*j*r.rng.Float64()
		r.mu.Unlock()
		d = time.Duration(float64(d) * f)
	}
	return d
}

// errorString is the item error of a transient failure: "code: message".
func errorString(err error) string {
	var e *infergate.Error
	if errors.As(err, &e) {
		return e.Code + ": " + e.Message
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return infergate.EDeadline + ": " + err.Error()
	}
	return infergate.EInternal + ": " + err.Error()
}

// bodyMessage extracts an error message from an error response body
// ({"error":"..."} as KServe v2, or {"error":{"message":"..."}} as
// OpenAI), or describes the status.
func bodyMessage(status int, body []byte) string {
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil && len(v.Error) > 0 {
		var s string
		if json.Unmarshal(v.Error, &s) == nil && s != "" {
			return s
		}
		var o struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(v.Error, &o) == nil && o.Message != "" {
			return o.Message
		}
	}
	return fmt.Sprintf("request failed with HTTP status %d", status)
}

// collect records item outcomes in groups: whatever has arrived since the
// last CompleteItems goes in the next one. It returns once stop is closed
// and the outcomes that arrived by then are recorded.
func (r *Runner) collect(ctx context.Context, stop <-chan struct{}) {
	const maxGroup = 512
	var group []outcome
	for {
		group = group[:0]
		select {
		case o := <-r.results:
			group = append(group, o)
		case <-stop:
			for {
				select {
				case o := <-r.results:
					group = append(group, o)
					continue
				default:
				}
				break
			}
			r.flush(ctx, group)
			return
		}
	drain:
		for len(group) < maxGroup {
			select {
			case o := <-r.results:
				group = append(group, o)
			default:
				break drain
			}
		}
		r.flush(ctx, group)
	}
}

func (r *Runner) flush(ctx context.Context, group []outcome) {
	if len(group) == 0 {
		return
	}
	results := make([]jobs.ItemResult, 0, len(group))
	for _, o := range group {
		if o.done {
			results = append(results, o.res)
		}
	}
	if len(results) > 0 {
		// An unavailable store (a full disk) is retried, with backoff,
		// for as long as the leases may still hold; leasing pauses
		// meanwhile (storeDown). Other errors get three quick tries.
		sctx, cancel := context.WithTimeout(ctx, max(30*time.Second, r.cfg.LeaseFor))
		var stale []jobs.ItemKey
		var err error
		delay := 50 * time.Millisecond
		for try := 0; ; try++ {
			if stale, err = r.store.CompleteItems(sctx, r.cfg.Owner, results); err == nil {
				break
			}
			unavailable := infergate.ErrorCode(err) == infergate.EUnavailable
			if unavailable {
				r.storeDown.Store(true)
			}
			if (!unavailable && try >= 2) || sctx.Err() != nil {
				break
			}
			if try == 0 || try%20 == 0 {
				r.log.Warn("runner: recording item outcomes, will retry", "items", len(results), "err", err)
			}
			select {
			case <-time.After(delay):
			case <-sctx.Done():
			}
			delay = min(2*delay, 2*time.Second)
		}
		r.storeDown.Store(false)
		cancel()
		if err != nil {
			// The items stay leased; once their leases expire they run again.
			r.log.Error("runner: recording item outcomes", "items", len(results), "err", err)
		} else {
			if len(stale) > 0 {
				r.log.Warn("runner: stale item outcomes ignored", "items", len(stale))
			}
			r.countCompletions(results, stale)
		}
	}
	for range group {
		<-r.sem
	}
	signal(r.wake)
}

// forget drops what the runner remembers of batches that are no longer
// active (finished by another replica, say).
func (r *Runner) forget(active []*jobs.Batch) {
	ids := make(map[string]bool, len(active))
	for _, b := range active {
		ids[b.ID] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.terminal {
		if !ids[id] {
			delete(r.terminal, id)
		}
	}
	for id := range r.rates {
		if !ids[id] {
			delete(r.rates, id)
		}
	}
}

func (r *Runner) setTerminal(id string, s jobs.Status) {
	r.mu.Lock()
	r.terminal[id] = s
	r.mu.Unlock()
}

// finalizing drives a batch in finalizing: it fails what has not started
// if the batch is expiring, and once no item can run, writes the files and
// finishes the batch.
func (r *Runner) finalizing(ctx context.Context, b *jobs.Batch) error {
	r.mu.Lock()
	to, ok := r.terminal[b.ID]
	r.mu.Unlock()
	if !ok {
		// Another replica moved the batch to finalizing, or this runner
		// did before a restart. Leave the files to the replica that moved
		// it while it may still be alive (a lease period), so that two
		// replicas do not both write them; then take over.
		if !b.FinalizingAt.IsZero() && r.clk.Now().Sub(b.FinalizingAt) < r.cfg.LeaseFor {
			return nil
		}
		// This runner moves a batch to finalizing at or after its expiry
		// only to expire it.
		to = jobs.StatusCompleted
		if !b.ExpiresAt.IsZero() && !b.FinalizingAt.Before(b.ExpiresAt) {
			to = jobs.StatusExpired
		}
	}
	if to == jobs.StatusExpired {
		if _, err := r.store.CancelPending(ctx, b.ID, jobs.ReasonExpired); err != nil {
			return err
		}
	}
	counts, err := r.store.CountItems(ctx, b.ID)
	if err != nil {
		return err
	}
	if counts.Runnable() > 0 {
		if to != jobs.StatusExpired {
			// Only an expiring batch enters finalizing with items left
			// (a resumed one whose timestamps did not tell): expire it.
			r.setTerminal(b.ID, jobs.StatusExpired)
			if _, err := r.store.CancelPending(ctx, b.ID, jobs.ReasonExpired); err != nil {
				return err
			}
		}
		return nil // live leases: wait for them to end
	}
	return r.finalize(ctx, b, jobs.StatusFinalizing, to, counts)
}

// cancelling drives a batch in cancelling: it fails the items that have not
// started, and once no item can run, writes the files and finishes the
// batch as cancelled.
func (r *Runner) cancelling(ctx context.Context, b *jobs.Batch) error {
	if _, err := r.store.CancelPending(ctx, b.ID, jobs.ReasonCancelled); err != nil {
		return err
	}
	counts, err := r.store.CountItems(ctx, b.ID)
	if err != nil {
		return err
	}
	if counts.Runnable() > 0 {
		return nil
	}
	return r.finalize(ctx, b, jobs.StatusCancelling, jobs.StatusCancelled, counts)
}

// finalize writes the output and error files of a batch whose items are
// all terminal and moves it from from to to with them.
func (r *Runner) finalize(ctx context.Context, b *jobs.Batch, from, to jobs.Status, counts jobs.ItemCounts) error {
	var out jobs.Outcome
	var err error
	if counts.Done > 0 {
		if out.OutputFileID, err = r.writeFile(ctx, b, jobs.ItemDone, b.ID+"_output.jsonl"); err != nil {
			return err
		}
	}
	if counts.Failed > 0 {
		if out.ErrorFileID, err = r.writeFile(ctx, b, jobs.ItemFailed, b.ID+"_error.jsonl"); err != nil {
			return err
		}
	}
	if err := r.store.FinishBatch(ctx, b.ID, from, to, r.clk.Now(), out); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.terminal, b.ID)
	delete(r.rates, b.ID)
	r.mu.Unlock()
	r.log.Info("runner: batch finished", "batch", b.ID, "status", to,
		"completed", counts.Done, "failed", counts.Failed)
	return nil
}

// writeFile streams the batch's items in state into a new file of
// purpose batch_output and returns its ID.
func (r *Runner) writeFile(ctx context.Context, b *jobs.Batch, state jobs.ItemState, name string) (string, error) {
	pr, pw := io.Pipe()
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		bw := bufio.NewWriterSize(pw, 64<<10)
		ids := openai.NewIDSource()
		var line []byte
		err := r.store.ItemResults(ctx, b.ID, state, func(it *jobs.Item) error {
			l := outputLine(it, ids)
			var err error
			if line, err = openai.AppendOutputLine(line[:0], l); err != nil && l.Response != nil {
				// A result that is not JSON goes in as a JSON string.
				l.Response.Body, _ = json.Marshal(string(it.Result))
				line, err = openai.AppendOutputLine(line[:0], l)
			}
			if err != nil {
				return err
			}
			_, err = bw.Write(line)
			return err
		})
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err) // nil: EOF
	}()
	f := &jobs.File{Purpose: jobs.PurposeBatchOutput, Filename: name, Owner: b.Owner}
	err := r.store.CreateFile(ctx, f, pr)
	pr.CloseWithError(errors.New("runner: file not read to the end")) // unblocks the writer if CreateFile stopped early
	<-wdone
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", name, err)
	}
	return f.ID, nil
}

// outputLine is the output or error file line of a terminal item, its
// ids from ids.
func outputLine(it *jobs.Item, ids *openai.IDSource) *openai.BatchOutputLine {
	l := &openai.BatchOutputLine{ID: ids.LineID(), CustomID: it.CustomID}
	if it.StatusCode > 0 && (it.State == jobs.ItemDone || len(it.Result) > 0) {
		var body json.RawMessage // null when empty
		if len(it.Result) > 0 {
			body = it.Result
		}
		l.Response = &openai.BatchResponse{
			StatusCode: it.StatusCode,
			RequestID:  ids.RequestID(),
			Body:       body,
		}
		return l
	}
	code, msg := lineError(it.Error)
	l.Error = &openai.BatchLineError{Code: code, Message: msg}
	return l
}

// lineError splits an item error into an error code and message.
func lineError(e string) (code, msg string) {
	switch e {
	case jobs.ReasonCancelled:
		return e, "This request was not executed because the batch was cancelled."
	case jobs.ReasonExpired:
		return e, "This request could not be executed before the completion window expired."
	}
	if c, m, ok := strings.Cut(e, ": "); ok && isCode(c) {
		return c, m
	}
	if e == "" {
		e = "request failed"
	}
	return "request_failed", e
}

func isCode(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}
