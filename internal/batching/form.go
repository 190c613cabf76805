package batching

import (
	"context"
	"errors"
	"runtime/debug"
	"slices"
	"time"

	"github.com/infergate/infergate"
)

// formLocked fills b with the next batch to run, highest class first, and
// returns with b empty and the time at which something may become ready
// (zero: only an arrival can change that) when nothing is ready now.
//
// A bulk-only worker (bulkOnly) forms bulk batches only, at the bulk
// policy's full size.
func (s *Scheduler) formLocked(now time.Time, b *batch, bulkOnly bool) (wake time.Time) {
	// Taking requests can find them all dead (their clients left between
	// the readiness check and the take); then look again, so that the
	// worker never waits without a timer while other work is pending.
	for range 8 {
		wake = s.formOnceLocked(now, b, bulkOnly)
		if len(b.reqs) > 0 || !wake.IsZero() || s.takeableLocked(bulkOnly) == 0 {
			return wake
		}
	}
	return now.Add(time.Millisecond)
}

// takeableLocked counts the queued requests a worker of this kind may
// take: a regular worker leaves bulk to the bulk workers unless it may help
// (closing, or a share left). Only an arrival or a share change, both of
// which kick it, can change that.
func (s *Scheduler) takeableLocked(bulkOnly bool) int {
	nBulk := s.q[infergate.ClassBulk].len()
	switch {
	case bulkOnly:
		return nBulk
	case s.regularTakesBulkLocked():
		return s.total
	}
	return s.total - nBulk
}

// regularTakesBulkLocked reports whether regular workers may form bulk
// batches now.
func (s *Scheduler) regularTakesBulkLocked() bool {
	return s.bulkWorkers == 0 || s.closed || s.bulkShareLeftLocked()
}

func (s *Scheduler) formOnceLocked(now time.Time, b *batch, bulkOnly bool) (wake time.Time) {
	b.reqs, b.items = b.reqs[:0], 0
	s.dropDeadLocked(now)
	c := infergate.ClassBulk
	if bulkOnly {
		ready, at := s.readyLocked(c, now)
		if !ready {
			return at
		}
		s.takeLocked(c, now, b, s.limitLocked(c))
		return time.Time{}
	}
	if s.bulkWorkers > 0 && !s.closed && s.bulkShareLeftLocked() {
		// The guaranteed share: a job behind its completion window gets
		// the regular workers first until bulk has had its share of their
		// busy time, even when real-time work would keep them busy.
		if ready, _ := s.readyLocked(c, now); ready {
			s.takeLocked(c, now, b, s.limitLocked(c))
			return time.Time{}
		}
	}
	for _, rc := range s.realtimeOrderLocked() {
		ready, at := s.readyLocked(rc, now)
		if ready {
			lim := s.limitLocked(rc)
			s.takeLocked(rc, now, b, lim)
			if s.pol[rc].FillWithBulk && b.items < lim {
				s.fillLocked(c, now, b, s.spareSlotsLocked(b.items, lim))
			}
			return time.Time{}
		}
		wake = earliest(wake, at)
	}
	if !s.regularTakesBulkLocked() {
		// Bulk is the bulk workers' (and the wake times of its policy
		// theirs to keep).
		return wake
	}
	ready, at := s.readyLocked(c, now)
	if !ready {
		return earliest(wake, at)
	}
	limit := s.limitLocked(c)
	if s.q[infergate.ClassUrgent].len()+s.q[infergate.ClassNormal].len() > 0 && !wake.IsZero() {
		// Bulk takes only the capacity the other classes leave: the
		// largest batch whose measured execution time ends before the
		// next moment another class may become ready.
		limit = s.fitLocked(limit, wake.Sub(now))
		if limit == 0 {
			return wake
		}
	} else if !s.lastRealtime.IsZero() && now.Sub(s.lastRealtime) < realtimeWindow {
		// Real-time traffic is flowing but none is queued right now: the
		// next request may arrive at any moment and would wait for this
		// batch, so keep it within the real-time classes' queue delay.
		limit = max(s.fitLocked(limit, s.realtimeBudget()), 1)
	}
	s.takeLocked(c, now, b, limit)
	return time.Time{}
}

// realtimeOrderLocked is the order in which the urgent and normal lanes
// are offered to a worker: urgent first, except while a mode switch routes
// normal requests into the urgent lane (realtime mode) and the one at its
// head is younger than the normal lane's head. Then the class's two shares
// are served first come, first served, as one class: strict priority would
// starve the share left in the normal lane behind its own class's other
// share (a switch to hybrid under high load). Urgent requests queued
// behind rerouted ones wait for them, as in any FIFO lane.
func (s *Scheduler) realtimeOrderLocked() [2]infergate.Class {
	u, n := &s.q[infergate.ClassUrgent], &s.q[infergate.ClassNormal]
	if u.len() > 0 && n.len() > 0 && u.front().class == infergate.ClassNormal && n.front().enq.Before(u.front().enq) {
		return [2]infergate.Class{infergate.ClassNormal, infergate.ClassUrgent}
	}
	return [2]infergate.Class{infergate.ClassUrgent, infergate.ClassNormal}
}

// spareSlotFactor bounds how much longer bulk items may make a real-time
// batch, as measured by the latency model, while bulk workers exist.
const spareSlotFactor = 1.1

// spareSlotsLocked is the batch size up to which bulk items may fill a
// real-time batch of n items (limit at most). Without bulk workers it is
// limit: the slots are free capacity the bulk lane would otherwise wait
// for. With bulk workers, bulk runs anyway on the CPU time real-time work
// leaves, so it may only take slots that barely lengthen the batch: the
// largest size whose measured latency is within 10% of n items' (the
// per-batch overhead of a small batch leaves such slots).
func (s *Scheduler) spareSlotsLocked(n, limit int) int {
	if s.bulkWorkers == 0 || s.closed {
		return limit
	}
	base, ok := s.lat.Estimate(n)
	if !ok {
		return n
	}
	best := n
	for m := n + 1; m <= limit; m++ {
		est, _ := s.lat.Estimate(m)
		if float64(est) > float64(base)*spareSlotFactor {
			break
		}
		best = m
	}
	return best
}

// realtimeWindow is how recently an urgent or normal request must have
// arrived for bulk batches to be kept short.
const realtimeWindow = time.Second

// realtimeBudget is how long a bulk batch may run while real-time traffic
// flows: the shorter max queue delay of the urgent and normal classes
// (hybrid), at least a millisecond.
func (s *Scheduler) realtimeBudget() time.Duration {
	d := time.Duration(0)
	for _, c := range [...]infergate.Class{infergate.ClassUrgent, infergate.ClassNormal} {
		if p := s.pol[c]; p.Kind == Hybrid && p.MaxQueueDelay > 0 && (d == 0 || p.MaxQueueDelay < d) {
			d = p.MaxQueueDelay
		}
	}
	return max(d, time.Millisecond)
}

// fitLocked returns the largest batch size <= limit, halving, whose
// estimated execution time fits in d; 0 if none does.
func (s *Scheduler) fitLocked(limit int, d time.Duration) int {
	for n := limit; n >= 1; n /= 2 {
		est, ok := s.lat.Estimate(n)
		if !ok || est <= d {
			return n
		}
	}
	return 0
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}

// dropDeadLocked completes, without running them, the requests at the head
// of each queue whose client is gone or whose deadline has passed. Requests
// further back are checked again when they are taken.
func (s *Scheduler) dropDeadLocked(now time.Time) {
	for _, c := range infergate.Classes {
		q := &s.q[c]
		for q.len() > 0 {
			r := q.front()
			if !s.deadLocked(r, now) {
				break
			}
			q.popFront()
			s.total--
		}
	}
}

// deadLocked reports whether r must not run, completing it if so.
func (s *Scheduler) deadLocked(r *request, now time.Time) bool {
	if r.ctx.Err() != nil {
		s.finishLocked(r, canceledErr(r.ctx), OutcomeCanceled)
		return true
	}
	if !r.deadline.IsZero() && !now.Before(r.deadline) && s.pol[r.lane].TimeoutAction == Reject {
		if s.pol[r.lane].Kind == AIMD {
			// An expiry is the AIMD controller's clearest miss.
			s.aimdLocked(r.lane, now.Sub(r.enq))
		}
		s.finishLocked(r, infergate.Errorf(infergate.EDeadline, "request timed out after %s in the %s queue", now.Sub(r.enq).Round(time.Microsecond), r.lane), OutcomeExpired)
		return true
	}
	return false
}

// readyLocked applies class c's policy: whether a batch should fire now,
// and if not, when it may.
func (s *Scheduler) readyLocked(c infergate.Class, now time.Time) (bool, time.Time) {
	q := &s.q[c]
	if q.len() == 0 {
		return false, time.Time{}
	}
	if s.closed {
		return true, time.Time{} // flush on shutdown
	}
	p := &s.pol[c]
	// Deadline pressure: fire no later than the tightest deadline among
	// the requests that would be in the batch, minus its measured
	// execution time.
	var fireBy time.Time
	if p.TimeoutAction == Reject {
		n, tight := s.formingLocked(c)
		if !tight.IsZero() {
			est, _ := s.lat.Estimate(min(n, p.MaxBatchSize))
			// Leave a margin for timer and dispatch delays, so that a
			// batch fired on pressure does not find its requests expired.
			fireBy = tight.Add(-est - est/4 - time.Millisecond)
			if !now.Before(fireBy) {
				return true, time.Time{}
			}
		}
	}
	switch p.Kind {
	case Single:
		return true, time.Time{}
	case Size:
		if q.items >= p.MaxBatchSize {
			return true, time.Time{}
		}
		return false, fireBy
	case Time:
		// Ticks are periodic from the scheduler's start; a request waits
		// for the first tick after it arrived.
		if head := q.front().enq; !s.nextTick[c].After(head) {
			k := head.Sub(s.nextTick[c])/p.BatchTimeout + 1
			s.nextTick[c] = s.nextTick[c].Add(k * p.BatchTimeout)
		}
		if !now.Before(s.nextTick[c]) {
			return true, time.Time{}
		}
		return false, earliest(fireBy, s.nextTick[c])
	case Adaptive:
		return s.adaptiveReadyLocked(c, now)
	case AIMD:
		if q.items >= s.aimdMax[c] {
			return true, time.Time{}
		}
		due := q.front().enq.Add(p.MaxQueueDelay)
		if !now.Before(due) {
			return true, time.Time{}
		}
		return false, earliest(fireBy, due)
	default: // Hybrid
		if q.items >= p.MaxBatchSize {
			return true, time.Time{}
		}
		if len(p.PreferredBatchSizes) > 0 && q.items >= slices.Max(p.PreferredBatchSizes) {
			return true, time.Time{}
		}
		due := q.front().enq.Add(p.MaxQueueDelay)
		if !now.Before(due) {
			return true, time.Time{}
		}
		return false, earliest(fireBy, due)
	}
}

// takeLocked moves requests of class c into b, FIFO, up to limit items. The
// first live request is always taken, even if it alone exceeds limit.
func (s *Scheduler) takeLocked(c infergate.Class, now time.Time, b *batch, limit int) {
	p := &s.pol[c]
	if p.Kind == Hybrid && len(p.PreferredBatchSizes) > 0 && !s.closed {
		// Round down to the largest preferred size that can be formed,
		// unless the delay expired (then send what is there).
		if q := &s.q[c]; q.len() > 0 && now.Before(q.front().enq.Add(p.MaxQueueDelay)) {
			best := 0
			for _, n := range p.PreferredBatchSizes {
				if n <= min(q.items, limit) && n > best {
					best = n
				}
			}
			if best > 0 {
				limit = best
			}
		}
	}
	if p.Kind == Time {
		// Advance to the first tick after now.
		if !now.Before(s.nextTick[c]) {
			k := now.Sub(s.nextTick[c])/p.BatchTimeout + 1
			s.nextTick[c] = s.nextTick[c].Add(k * p.BatchTimeout)
		}
	}
	s.fillLocked(c, now, b, limit)
}

// fillLocked moves live requests of class c into b while they fit in limit.
func (s *Scheduler) fillLocked(c infergate.Class, now time.Time, b *batch, limit int) {
	q := &s.q[c]
	for q.len() > 0 {
		r := q.front()
		if s.deadLocked(r, now) {
			q.popFront()
			s.total--
			continue
		}
		if len(b.reqs) > 0 && (b.items+r.items > limit || !sameItemShape(b.reqs[0], r)) {
			// FIFO: the batch ends at the first request that does not
			// fit, in size or in the shape of its items.
			return
		}
		q.popFront()
		s.total--
		b.reqs = append(b.reqs, r)
		b.items += r.items
	}
}

// sameItemShape reports whether a and b can share a batch: every input has
// the same dimensions after the batch dimension (models with dynamic
// non-batch dimensions take requests of different shapes).
func sameItemShape(a, b *request) bool {
	if len(a.inputs) != len(b.inputs) {
		return false
	}
	for i := range a.inputs {
		sa, sb := a.inputs[i].Shape, b.inputs[i].Shape
		if len(sa) == 0 || len(sb) == 0 || !slices.Equal(sa[1:], sb[1:]) {
			return false
		}
	}
	return true
}

// execute runs b on executor e and completes its requests.
func (s *Scheduler) execute(ctx context.Context, id int, e Executor, b *batch, bulkOnly bool) {
	inputs, release := s.concat(b)
	start := s.clock.Now()
	// Once every request of the batch has given up on it (Submit waits for
	// a running batch until twice its timeout), the runtime may stop: a
	// remote backend's upstream call ends there.
	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if last, ok := latestGiveUp(b); ok {
		runCtx, cancel = s.withDeadline(ctx, last.Sub(start))
	}
	outs, busy, err := s.run(runCtx, e, inputs)
	if err != nil && errors.Is(context.Cause(runCtx), context.DeadlineExceeded) {
		err = &infergate.Error{Code: infergate.EDeadline, Message: "the batch ran past twice the timeout of every request in it", Err: err}
	}
	cancel()
	end := s.clock.Now()
	release()
	wall := end.Sub(start)
	selfTimed := busy > 0
	if !selfTimed {
		busy = wall
	}
	if err == nil {
		err = checkOutputs(outs, b)
	}
	info := &BatchInfo{Instance: id, Items: b.items, Busy: busy, Err: err}
	s.mu.Lock()
	if !bulkOnly {
		onlyBulk := true
		for _, r := range b.reqs {
			onlyBulk = onlyBulk && r.lane == infergate.ClassBulk
		}
		s.addRegBusyLocked(end, onlyBulk, wall)
		// AIMD feedback: the oldest request of the batch's class.
		if c := b.reqs[0].lane; s.pol[c].Kind == AIMD && err == nil {
			s.aimdLocked(c, end.Sub(b.reqs[0].enq))
		}
	}
	for _, c := range infergate.Classes {
		info.Modes[c] = s.pol[c].Mode
	}
	for _, r := range b.reqs {
		info.Requests[r.class]++
		info.ItemsBy[r.class] += r.items
		// A request served in another class's lane (a mode switch in
		// progress) is served, and accounted, in that lane's mode. A
		// batch's main requests come from one lane, so a class has one
		// mode per batch.
		info.Modes[r.class] = s.pol[r.lane].Mode
	}
	s.mu.Unlock()
	// A bulk-only worker's batches yield to real-time work: their wall time
	// counts the preemptions, and only a self-measured busy time says how
	// long the batch itself takes.
	// A stalled batch (a runtime that hung and came back) says nothing
	// about how long a batch takes: left out, it cannot make admission
	// refuse everything once the runtime has recovered.
	stalled := false
	if est, ok := s.lat.Estimate(b.items); ok && busy > max(StallFloor, StallFactor*est) {
		stalled = true
		s.log.Warn("a batch ran past the stall limit; not counted in the latency model", "instance", id, "items", b.items, "took", busy, "estimate", est)
	}
	if err == nil && (selfTimed || !bulkOnly) && !stalled {
		s.lat.Observe(b.items, busy)
	}
	if d, ok := s.lat.Estimate(1); ok && s.lat.Measured(1) {
		info.Batch1 = d
	}
	s.rec.RecordBatch(s.cfg.Model, info)
	if err != nil && len(b.reqs) > 1 && isolatable(err) {
		// One bad request must not fail its batch-mates: run each alone,
		// so that only the ones that fail by themselves fail.
		s.log.Warn("batch failed; running its requests one by one", "instance", id, "requests", len(b.reqs), "err", err)
		for _, r := range b.reqs {
			one := batch{reqs: []*request{r}, items: r.items}
			s.execute(ctx, id, e, &one, bulkOnly)
		}
		return
	}
	off := 0
	for _, r := range b.reqs {
		queued := start.Sub(r.enq)
		// Record before answering, so that metrics read after a
		// response already count it.
		if err != nil {
			s.rec.RecordRequest(s.cfg.Model, r.class, OutcomeError, queued, wall)
			r.done <- result{err: runError(err)}
			continue
		}
		resp := &Response{Outputs: split(outs, b, off, r.items), Queued: queued, Compute: wall, BatchSize: b.items,
			Busy: time.Duration(float64(busy) * float64(r.items) / float64(max(b.items, 1)))}
		off += r.items
		s.rec.RecordRequest(s.cfg.Model, r.class, OutcomeOK, queued, wall)
		r.done <- result{resp: resp}
	}
}

// withDeadline is context.WithTimeout on the scheduler's clock (a fake one
// in tests moves only when told).
func (s *Scheduler) withDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := s.clock.NewTimer(d)
	done := make(chan struct{})
	go func() {
		select {
		case <-t.C():
			cancel(context.DeadlineExceeded)
		case <-done:
		}
	}()
	return ctx, func() {
		t.Stop()
		close(done)
		cancel(context.Canceled)
	}
}

// latestGiveUp returns when the last of b's requests gives up waiting for
// it: its deadline plus its timeout again (see Submit); ok is false when
// any of them has no deadline.
func latestGiveUp(b *batch) (last time.Time, ok bool) {
	for _, r := range b.reqs {
		if r.deadline.IsZero() || !r.expires {
			return time.Time{}, false
		}
		if g := r.deadline.Add(r.deadline.Sub(r.enq)); g.After(last) {
			last = g
		}
	}
	return last, len(b.reqs) > 0
}

// run executes one batch on e, turning a panic of the runtime into an
// error: a model that crashes on some input must not take the server
// down. busy is the executor's own measure (0: none).
func (s *Scheduler) run(ctx context.Context, e Executor, inputs []infergate.Tensor) (outs []infergate.Tensor, busy time.Duration, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("runtime panicked", "panic", v, "stack", string(debug.Stack()))
			outs, busy, err = nil, 0, infergate.Errorf(infergate.EInternal, "the runtime panicked: %v", v)
		}
	}()
	if te, ok := e.(TimedExecutor); ok {
		return te.RunTimed(ctx, inputs)
	}
	outs, err = e.Run(ctx, inputs)
	return outs, 0, err
}

// isolatable reports whether a failed batch may be the fault of one of
// its requests, so that running them one by one can save the others: an
// input the runtime rejects, or a runtime failure (a crash on some input).
// A remote backend that is unavailable or too slow would fail them all
// again, one call each.
func isolatable(err error) bool {
	switch infergate.ErrorCode(err) {
	case infergate.EUnavailable, infergate.EDeadline, infergate.ECanceled, infergate.EOverloaded:
		return false
	}
	return true
}

// runError is what a request hears of a failed batch: a runtime's own
// input complaint (a shape it cannot compute, say) is the request's
// problem, 422; an unavailable or slow remote backend is said as such (503,
// 504); anything else is an internal error.
func runError(err error) error {
	switch infergate.ErrorCode(err) {
	case infergate.EInvalid, infergate.EUnprocess:
		return &infergate.Error{Code: infergate.EUnprocess, Message: "the model cannot run this input: " + infergate.ErrorMessage(err), Err: err}
	case infergate.EUnavailable, infergate.EDeadline:
		return &infergate.Error{Code: infergate.ErrorCode(err), Message: "model execution failed: " + infergate.ErrorMessage(err), Err: err}
	}
	return &infergate.Error{Code: infergate.EInternal, Message: "model execution failed", Err: err}
}

// concat joins the requests' inputs along the batch dimension. A batch of
// one request uses its tensors as they are.
func (s *Scheduler) concat(b *batch) ([]infergate.Tensor, func()) {
	if len(b.reqs) == 1 {
		return b.reqs[0].inputs, func() {}
	}
	first := b.reqs[0].inputs
	out := make([]infergate.Tensor, len(first))
	var held []*[]byte
	for i, t := range first {
		size := 0
		for _, r := range b.reqs {
			size += len(r.inputs[i].Data)
		}
		bp := s.getBuf(size)
		held = append(held, bp)
		data := (*bp)[:0]
		for _, r := range b.reqs {
			data = append(data, r.inputs[i].Data...)
		}
		shape := slices.Clone(t.Shape)
		shape[0] = int64(b.items)
		out[i] = infergate.Tensor{Name: t.Name, DataType: t.DataType, Shape: shape, Data: data}
	}
	return out, func() {
		for _, bp := range held {
			s.bufs.Put(bp)
		}
	}
}

func (s *Scheduler) getBuf(size int) *[]byte {
	if v, ok := s.bufs.Get().(*[]byte); ok && cap(*v) >= size {
		return v
	}
	b := make([]byte, 0, size)
	return &b
}

func checkOutputs(outs []infergate.Tensor, b *batch) error {
	if len(b.reqs) == 1 {
		return nil
	}
	return CheckRows(outs, b.items)
}

// CheckRows checks that every output of a batch of rows rows has that
// many rows of equal size, so that SplitRows can hand them out.
func CheckRows(outs []infergate.Tensor, rows int) error {
	for _, o := range outs {
		if len(o.Shape) == 0 || o.Shape[0] != int64(rows) || len(o.Data)%rows != 0 {
			return infergate.Errorf(infergate.EInternal, "output %q has shape %v, not batch %d", o.Name, o.Shape, rows)
		}
	}
	return nil
}

// split returns the rows [off, off+n) of each output, sharing memory.
func split(outs []infergate.Tensor, b *batch, off, n int) []infergate.Tensor {
	if len(b.reqs) == 1 {
		return outs
	}
	return SplitRows(outs, b.items, off, n)
}

// SplitRows returns the rows [off, off+n) of each output of a batch of
// rows rows (checked by CheckRows), sharing memory.
func SplitRows(outs []infergate.Tensor, rows, off, n int) []infergate.Tensor {
	res := make([]infergate.Tensor, len(outs))
	for i, o := range outs {
		row := len(o.Data) / rows
		shape := slices.Clone(o.Shape)
		shape[0] = int64(n)
		res[i] = infergate.Tensor{Name: o.Name, DataType: o.DataType, Shape: shape, Data: o.Data[off*row : (off+n)*row : (off+n)*row]}
	}
	return res
}

type nopRecorder struct{}

func (nopRecorder) RecordBatch(string, *BatchInfo) {}
func (nopRecorder) RecordRequest(string, infergate.Class, Outcome, time.Duration, time.Duration) {
}

// adaptiveReadyLocked is the Adaptive policy's readiness: see Adaptive.
func (s *Scheduler) adaptiveReadyLocked(c infergate.Class, now time.Time) (bool, time.Time) {
	q, p := &s.q[c], &s.pol[c]
	if q.items >= p.MaxBatchSize {
		return true, time.Time{}
	}
	by := q.front().enq.Add(p.MaxQueueDelay)
	n, tight := s.formingLocked(c)
	if !tight.IsZero() && p.TimeoutAction == Reject {
		if est, ok := s.lat.Estimate(min(n+1, p.MaxBatchSize)); ok {
			// The same margin for timer and dispatch delays as the
			// other policies' deadline pressure.
			by = earliest(by, tight.Add(-est-est/4-time.Millisecond))
		}
	}
	if !now.Before(by) {
		return true, time.Time{}
	}
	// Arrivals are taken as Poisson at the measured rate: the next one is
	// expected a mean gap from now, whenever the last came.
	if gap := s.arrivalGap[c]; gap > 0 && now.Add(time.Duration(gap*float64(time.Second))).After(by) {
		return true, time.Time{}
	}
	return false, by
}

// formingLocked returns the items of the batch class c would form now (up
// to its policy's maximum) and the tightest deadline among its requests
// (zero: none).
func (s *Scheduler) formingLocked(c infergate.Class) (n int, tight time.Time) {
	q, p := &s.q[c], &s.pol[c]
	for i := 0; i < q.len() && n < p.MaxBatchSize; i++ {
		r := q.at(i)
		n += r.items
		if !r.deadline.IsZero() && (tight.IsZero() || r.deadline.Before(tight)) {
			tight = r.deadline
		}
	}
	return n, tight
}
