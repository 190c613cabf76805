package batching

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/perfmodel"
)

type countingRecorder struct {
	mu       sync.Mutex
	outcomes map[Outcome]int
	batches  []*BatchInfo
}

func (r *countingRecorder) RecordBatch(_ string, b *BatchInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, b)
}

func (r *countingRecorder) RecordRequest(_ string, _ infergate.Class, o Outcome, _, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outcomes == nil {
		r.outcomes = map[Outcome]int{}
	}
	r.outcomes[o]++
}

func (r *countingRecorder) count(o Outcome) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outcomes[o]
}

func policies(p Policy) [infergate.NumClasses]Policy {
	return [infergate.NumClasses]Policy{p, p, p}
}

func newSched(t *testing.T, cfg Config, execs ...Executor) *Scheduler {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = "m"
	}
	if cfg.MaxBatchSize == 0 {
		cfg.MaxBatchSize = 8
	}
	s := New(cfg)
	s.Start(execs...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type submitted struct {
	resp *Response
	err  error
}

func submitAsync(s *Scheduler, ctx context.Context, c infergate.Class, v float32) <-chan submitted {
	ch := make(chan submitted, 1)
	go func() {
		resp, err := s.Submit(ctx, c, []infergate.Tensor{fake.Input(4, v)}, 1, 0)
		ch <- submitted{resp, err}
	}()
	return ch
}

func TestResultsReachTheirRequests(t *testing.T) {
	tests := []struct {
		name string
		pol  Policy
	}{
		{"single", Policy{Kind: Single}},
		{"size", Policy{Kind: Size, MaxBatchSize: 4}},
		{"hybrid", Policy{Kind: Hybrid, MaxBatchSize: 4, MaxQueueDelay: time.Millisecond}},
		{"time", Policy{Kind: Time, MaxBatchSize: 4, BatchTimeout: time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sess := &fake.Session{}
			s := newSched(t, Config{Policies: policies(tt.pol)}, sess)
			var chans []<-chan submitted
			for i := range 16 {
				chans = append(chans, submitAsync(s, t.Context(), infergate.ClassNormal, float32(i)))
			}
			for i, ch := range chans {
				r := <-ch
				if r.err != nil {
					t.Fatalf("request %d: %v", i, r.err)
				}
				got := fake.Floats(r.resp.Outputs[0])
				if len(got) != 1 || got[0] != float32(4*i) {
					t.Fatalf("request %d got %v, want [%d]", i, got, 4*i)
				}
			}
			for _, n := range sess.Batches() {
				if n > s.Policy(infergate.ClassNormal).MaxBatchSize {
					t.Fatalf("batch of %d exceeds max", n)
				}
			}
		})
	}
}

func TestSizePolicyFiresAtMaxBatch(t *testing.T) {
	sess := &fake.Session{}
	// A long delay: only reaching the size can fire the batch.
	s := newSched(t, Config{Policies: policies(Policy{Kind: Size, MaxBatchSize: 4})}, sess)
	var chans []<-chan submitted
	for i := range 4 {
		chans = append(chans, submitAsync(s, t.Context(), infergate.ClassNormal, float32(i)))
	}
	for _, ch := range chans {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if b := sess.Batches(); len(b) != 1 || b[0] != 4 {
		t.Fatalf("batches %v, want [4]", b)
	}
}

func TestHybridFiresAfterMaxQueueDelay(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	sess := &fake.Session{}
	s := newSched(t, Config{Clock: clk, Policies: policies(Policy{Kind: Hybrid, MaxBatchSize: 8, MaxQueueDelay: 10 * time.Millisecond})}, sess)
	a := submitAsync(s, t.Context(), infergate.ClassNormal, 1)
	b := submitAsync(s, t.Context(), infergate.ClassNormal, 2)
	waitFor(t, "two queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 2 })
	waitFor(t, "timer armed", func() bool { return clk.Timers() > 0 })
	if n := len(sess.Batches()); n != 0 {
		t.Fatalf("ran %d batches before the delay passed", n)
	}
	clk.Advance(10 * time.Millisecond)
	for _, ch := range []<-chan submitted{a, b} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if got := sess.Batches(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("batches %v, want [2]", got)
	}
}

func TestTimePolicyWaitsForTick(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	sess := &fake.Session{}
	s := newSched(t, Config{Clock: clk, Policies: policies(Policy{Kind: Time, MaxBatchSize: 8, BatchTimeout: 10 * time.Millisecond})}, sess)
	clk.Advance(25 * time.Millisecond) // idle past two ticks
	a := submitAsync(s, t.Context(), infergate.ClassNormal, 1)
	waitFor(t, "queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	waitFor(t, "timer armed", func() bool { return clk.Timers() > 0 })
	if n := len(sess.Batches()); n != 0 {
		t.Fatalf("fired before the tick")
	}
	clk.Advance(5 * time.Millisecond) // the tick at 30ms
	if r := <-a; r.err != nil {
		t.Fatal(r.err)
	}
}

func TestPriorityUrgentBeforeNormalBeforeBulk(t *testing.T) {
	hang := make(chan struct{})
	var order []float32
	var mu sync.Mutex
	sess := &fake.Session{Hang: hang, Err: func(in []infergate.Tensor) error {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, fake.Floats(in[0])[0])
		return nil
	}}
	s := newSched(t, Config{Policies: policies(Policy{Kind: Single, MaxQueueSize: 10})}, sess)
	first := submitAsync(s, t.Context(), infergate.ClassNormal, 0)
	waitFor(t, "first running", func() bool { return len(sess.Batches()) == 1 })
	chans := []<-chan submitted{
		submitAsync(s, t.Context(), infergate.ClassBulk, 3),
	}
	waitFor(t, "bulk queued", func() bool { return s.QueueLen(infergate.ClassBulk) == 1 })
	chans = append(chans, submitAsync(s, t.Context(), infergate.ClassNormal, 2))
	waitFor(t, "normal queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	chans = append(chans, submitAsync(s, t.Context(), infergate.ClassUrgent, 1))
	waitFor(t, "urgent queued", func() bool { return s.QueueLen(infergate.ClassUrgent) == 1 })
	close(hang)
	for _, ch := range append(chans, first) {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []float32{0, 1, 2, 3}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("execution order %v, want %v", order, want)
		}
	}
}

func TestExpiredRequestsNeverExecute(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	hang := make(chan struct{})
	sess := &fake.Session{Hang: hang}
	rec := &countingRecorder{}
	s := newSched(t, Config{Clock: clk, Recorder: rec, Policies: policies(Policy{Kind: Single, DefaultTimeout: 5 * time.Millisecond})}, sess)
	a := submitAsync(s, t.Context(), infergate.ClassNormal, 1)
	waitFor(t, "a running", func() bool { return len(sess.Batches()) == 1 })
	b := submitAsync(s, t.Context(), infergate.ClassNormal, 2)
	waitFor(t, "b queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	clk.Advance(6 * time.Millisecond)
	close(hang)
	if r := <-a; r.err != nil {
		t.Fatal(r.err)
	}
	r := <-b
	if infergate.ErrorCode(r.err) != infergate.EDeadline {
		t.Fatalf("b: got %v, want deadline error", r.err)
	}
	if n := len(sess.Batches()); n != 1 {
		t.Fatalf("executed %d batches, want 1 (b expired)", n)
	}
	if rec.count(OutcomeExpired) != 1 {
		t.Fatalf("expired count %d", rec.count(OutcomeExpired))
	}
}

func TestDelayActionKeepsExpiredRequests(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	hang := make(chan struct{})
	sess := &fake.Session{Hang: hang}
	s := newSched(t, Config{Clock: clk, Policies: policies(Policy{Kind: Single, DefaultTimeout: 5 * time.Millisecond, TimeoutAction: Delay})}, sess)
	a := submitAsync(s, t.Context(), infergate.ClassNormal, 1)
	waitFor(t, "a running", func() bool { return len(sess.Batches()) == 1 })
	b := submitAsync(s, t.Context(), infergate.ClassNormal, 2)
	waitFor(t, "b queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	clk.Advance(6 * time.Millisecond)
	close(hang)
	for _, ch := range []<-chan submitted{a, b} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
}

func TestFullQueueAnswers429AndShedsLowestClass(t *testing.T) {
	hang := make(chan struct{})
	sess := &fake.Session{Hang: hang}
	rec := &countingRecorder{}
	s := newSched(t, Config{Recorder: rec, MaxTotalQueue: 2, Policies: policies(Policy{Kind: Single, MaxQueueSize: 2})}, sess)
	running := submitAsync(s, t.Context(), infergate.ClassNormal, 0)
	waitFor(t, "running", func() bool { return len(sess.Batches()) == 1 })
	bulk1 := submitAsync(s, t.Context(), infergate.ClassBulk, 1)
	waitFor(t, "bulk queued", func() bool { return s.QueueLen(infergate.ClassBulk) == 1 })
	bulk2 := submitAsync(s, t.Context(), infergate.ClassBulk, 2)
	waitFor(t, "bulk queued", func() bool { return s.QueueLen(infergate.ClassBulk) == 2 })

	// The bulk queue is full: another bulk request is rejected.
	_, err := s.Submit(t.Context(), infergate.ClassBulk, []infergate.Tensor{fake.Input(4, 9)}, 1, 0)
	var e *infergate.Error
	if !errors.As(err, &e) || e.Code != infergate.EOverloaded || e.RetryAfterSeconds < 1 {
		t.Fatalf("got %v, want overloaded with Retry-After", err)
	}
	// An urgent request evicts the newest bulk request.
	urgent := submitAsync(s, t.Context(), infergate.ClassUrgent, 3)
	if r := <-bulk2; infergate.ErrorCode(r.err) != infergate.EOverloaded {
		t.Fatalf("bulk2: got %v, want shed", r.err)
	}
	close(hang)
	for _, ch := range []<-chan submitted{running, bulk1, urgent} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if rec.count(OutcomeShed) != 1 || rec.count(OutcomeRejected) != 1 {
		t.Fatalf("outcomes %v", rec.outcomes)
	}
}

func TestCanceledRequestLeavesQueue(t *testing.T) {
	hang := make(chan struct{})
	sess := &fake.Session{Hang: hang}
	s := newSched(t, Config{Policies: policies(Policy{Kind: Single})}, sess)
	running := submitAsync(s, t.Context(), infergate.ClassNormal, 0)
	waitFor(t, "running", func() bool { return len(sess.Batches()) == 1 })
	ctx, cancel := context.WithCancel(t.Context())
	gone := submitAsync(s, ctx, infergate.ClassNormal, 1)
	waitFor(t, "queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	cancel()
	if r := <-gone; infergate.ErrorCode(r.err) != infergate.ECanceled {
		t.Fatalf("got %v, want canceled", r.err)
	}
	if n := s.QueueLen(infergate.ClassNormal); n != 0 {
		t.Fatalf("queue length %d after cancel", n)
	}
	close(hang)
	<-running
	if n := len(sess.Batches()); n != 1 {
		t.Fatalf("canceled request executed")
	}
}

func TestBulkFillsSpareSlots(t *testing.T) {
	hang := make(chan struct{})
	sess := &fake.Session{Hang: hang}
	pol := policies(Policy{Kind: Hybrid, MaxBatchSize: 4, MaxQueueDelay: 0, FillWithBulk: true})
	pol[infergate.ClassBulk] = Policy{Kind: Size, MaxBatchSize: 8}
	s := newSched(t, Config{Policies: pol}, sess)
	first := submitAsync(s, t.Context(), infergate.ClassUrgent, 0)
	waitFor(t, "running", func() bool { return len(sess.Batches()) == 1 })
	var chans []<-chan submitted
	for i := range 3 {
		chans = append(chans, submitAsync(s, t.Context(), infergate.ClassBulk, float32(i)))
	}
	waitFor(t, "bulk queued", func() bool { return s.QueueLen(infergate.ClassBulk) == 3 })
	chans = append(chans, submitAsync(s, t.Context(), infergate.ClassNormal, 5))
	waitFor(t, "normal queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	close(hang)
	for _, ch := range append(chans, first) {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
	// One normal request plus three bulk items in its spare slots.
	if got := sess.Batches(); len(got) != 2 || got[1] != 4 {
		t.Fatalf("batches %v, want [1 4]", got)
	}
}

func TestRuntimeErrorFailsBatch(t *testing.T) {
	var calls atomic.Int32
	sess := &fake.Session{Err: func([]infergate.Tensor) error {
		if calls.Add(1) == 1 {
			return errors.New("boom")
		}
		return nil
	}}
	s := newSched(t, Config{Policies: policies(Policy{Kind: Single})}, sess)
	r := <-submitAsync(s, t.Context(), infergate.ClassNormal, 1)
	if infergate.ErrorCode(r.err) != infergate.EInternal {
		t.Fatalf("got %v, want internal", r.err)
	}
	if r := <-submitAsync(s, t.Context(), infergate.ClassNormal, 1); r.err != nil {
		t.Fatalf("second request: %v", r.err)
	}
}

func TestCloseDrainsQueuedWork(t *testing.T) {
	sess := &fake.Session{}
	s := New(Config{Model: "m", MaxBatchSize: 8, Policies: policies(Policy{Kind: Size, MaxBatchSize: 8})})
	s.Start(sess)
	a := submitAsync(s, t.Context(), infergate.ClassNormal, 1)
	waitFor(t, "queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := <-a; r.err != nil {
		t.Fatalf("queued request failed on close: %v", r.err)
	}
	if _, err := s.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, 1)}, 1, 0); infergate.ErrorCode(err) != infergate.EUnavailable {
		t.Fatalf("submit after close: %v", err)
	}
}

// shapeRecorder records the shape of every batch it runs and answers one
// FP32 output row per item.
type shapeRecorder struct {
	mu      sync.Mutex
	shapes  [][]int64
	hang    chan struct{}
	started atomic.Int32
	perItem time.Duration // sleep per item, so the latency model learns a real curve
}

func (s *shapeRecorder) Run(_ context.Context, in []infergate.Tensor) ([]infergate.Tensor, error) {
	s.started.Add(1)
	if s.hang != nil {
		<-s.hang
	}
	s.mu.Lock()
	s.shapes = append(s.shapes, append([]int64(nil), in[0].Shape...))
	s.mu.Unlock()
	n := in[0].Shape[0]
	time.Sleep(time.Duration(n) * s.perItem)
	return []infergate.Tensor{{Name: "y", DataType: infergate.FP32, Shape: []int64{n, 1}, Data: make([]byte, 4*n)}}, nil
}

func TestRequestsOfDifferentItemShapesAreNotBatched(t *testing.T) {
	exec := &shapeRecorder{hang: make(chan struct{})}
	s := newSched(t, Config{Policies: policies(Policy{Kind: Hybrid, MaxBatchSize: 8, MaxQueueDelay: time.Millisecond})}, exec)
	img := func(h, w int64) []infergate.Tensor {
		return []infergate.Tensor{{Name: "x", DataType: infergate.FP32, Shape: []int64{1, 3, h, w}, Data: make([]byte, 4*3*h*w)}}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	// First one request to occupy the worker, then a mix of shapes.
	for i, in := range [][]infergate.Tensor{img(4, 4), img(4, 4), img(4, 4), img(4, 8), img(4, 4)} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Submit(t.Context(), infergate.ClassNormal, in, 1, 0)
			errs <- err
		}()
		if i == 0 {
			waitFor(t, "first running", func() bool { return exec.started.Load() == 1 })
		} else {
			waitFor(t, "queued", func() bool { return s.QueueLen(infergate.ClassNormal) == i })
		}
	}
	close(exec.hang)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	exec.mu.Lock()
	defer exec.mu.Unlock()
	if len(exec.shapes) != 4 || exec.shapes[1][0] != 2 || exec.shapes[2][3] != 8 {
		t.Fatalf("batches %v, want 4: [1 4x4], [2 4x4], [1 4x8], [1 4x4]", exec.shapes)
	}
}

func TestAdmissionRejectsWhatWouldExpire(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	lat := perfmodel.New()
	lat.Observe(4, 10*time.Millisecond) // a batch of 4 takes 10ms
	hang := make(chan struct{})
	sess := &fake.Session{Hang: hang}
	s := newSched(t, Config{Clock: clk, Latency: lat, MaxBatchSize: 4,
		Policies: policies(Policy{Kind: Size, MaxBatchSize: 4, DefaultTimeout: 25 * time.Millisecond})}, sess)
	// Nothing queued: 1 round of 10ms fits in 25ms; the size trigger
	// fires on deadline pressure and the request runs (and hangs).
	running := submitAsync(s, t.Context(), infergate.ClassNormal, 0)
	waitFor(t, "timer armed", func() bool { return clk.Timers() > 0 })
	// Deadline pressure: 25ms minus the estimated batch time and margin.
	clk.Advance(20 * time.Millisecond)
	waitFor(t, "running", func() bool { return len(sess.Batches()) == 1 })
	// Eight more fit in two rounds (20ms); the ninth would need a third.
	var queued []<-chan submitted
	for i := range 8 {
		queued = append(queued, submitAsync(s, t.Context(), infergate.ClassNormal, float32(i)))
		waitFor(t, "queued", func() bool { return s.QueueLen(infergate.ClassNormal) == i+1 })
	}
	_, err := s.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, 9)}, 1, 0)
	var e *infergate.Error
	if !errors.As(err, &e) || e.Code != infergate.EOverloaded || e.RetryAfterSeconds < 1 {
		t.Fatalf("ninth request: got %v, want 429 for a deadline it cannot meet", err)
	}
	// A request with a longer timeout of its own is admitted.
	long := make(chan error, 1)
	go func() {
		_, err := s.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, 9)}, 1, time.Second)
		long <- err
	}()
	waitFor(t, "long one queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 9 })
	close(hang)
	<-running
	// Move the fake clock until every queued request has an answer (run
	// on deadline pressure or expired; neither is checked here).
	var longErr error
	longDone := false
	waitFor(t, "all answered", func() bool {
		clk.Advance(5 * time.Millisecond)
		if !longDone {
			select {
			case longErr = <-long:
				longDone = true
			default:
			}
		}
		return longDone && s.QueueLen(infergate.ClassNormal) == 0
	})
	for _, ch := range queued {
		<-ch
	}
	// Admitted (it was queued above), so it ran or expired, never 429.
	if infergate.ErrorCode(longErr) == infergate.EOverloaded {
		t.Fatalf("long-timeout request: %v", longErr)
	}
}

func TestCloseTimeoutFailsQueuedAndWorkersExit(t *testing.T) {
	hang := make(chan struct{})
	sess := &fake.Session{Hang: hang}
	s := New(Config{Model: "m", MaxBatchSize: 8, Policies: policies(Policy{Kind: Single})})
	s.Start(sess)
	running := submitAsync(s, t.Context(), infergate.ClassNormal, 0)
	waitFor(t, "running", func() bool { return len(sess.Batches()) == 1 })
	queued := submitAsync(s, t.Context(), infergate.ClassNormal, 1)
	waitFor(t, "queued", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); err == nil {
		t.Fatal("close returned before the hung batch finished")
	}
	if r := <-queued; infergate.ErrorCode(r.err) != infergate.EUnavailable {
		t.Fatalf("queued request: %v, want unavailable", r.err)
	}
	close(hang)
	<-running
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("workers did not exit after the hung batch finished")
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"hybrid", Policy{Kind: Hybrid, MaxBatchSize: 8, MaxQueueDelay: time.Millisecond}, true},
		{"size with timeout", Policy{Kind: Size, MaxBatchSize: 8, DefaultTimeout: time.Second}, true},
		{"size without timeout", Policy{Kind: Size, MaxBatchSize: 8}, false},
		{"size with delay action", Policy{Kind: Size, MaxBatchSize: 8, DefaultTimeout: time.Second, TimeoutAction: Delay}, false},
		{"time without period", Policy{Kind: Time, MaxBatchSize: 8}, false},
		{"unknown kind", Policy{Kind: "bogus"}, false},
		{"max batch above model", Policy{Kind: Hybrid, MaxBatchSize: 65}, false},
		{"preferred above max", Policy{Kind: Hybrid, MaxBatchSize: 8, PreferredBatchSizes: []int{16}}, false},
		{"bad action", Policy{Kind: Single, TimeoutAction: "drop"}, false},
		{"bad mode", Policy{Kind: Single, Mode: "turbo"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(64); (err == nil) != tc.ok {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestBulkBatchesStayShortWhileRealtimeFlows(t *testing.T) {
	pol := policies(Policy{Kind: Hybrid, MaxBatchSize: 64, MaxQueueDelay: 5 * time.Millisecond})
	pol[infergate.ClassBulk] = Policy{Kind: Hybrid, MaxBatchSize: 64}
	for _, tc := range []struct {
		name     string
		realtime bool
		wantMax  int
	}{
		{"bulk alone gets full batches", false, 64},
		// At 1ms per item a 5ms budget fits at most 4 items.
		{"bulk behind recent realtime stays within its queue delay", true, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lat := perfmodel.New()
			lat.Observe(4, 4*time.Millisecond)
			lat.Observe(64, 64*time.Millisecond)
			exec := &shapeRecorder{hang: make(chan struct{}), perItem: time.Millisecond}
			s := newSched(t, Config{MaxBatchSize: 64, Latency: lat, Policies: pol}, exec)
			var chans []<-chan submitted
			if tc.realtime {
				chans = append(chans, submitAsync(s, t.Context(), infergate.ClassNormal, 0))
			} else {
				chans = append(chans, submitAsync(s, t.Context(), infergate.ClassBulk, 0))
			}
			waitFor(t, "first running", func() bool { return exec.started.Load() == 1 })
			for i := range 64 {
				chans = append(chans, submitAsync(s, t.Context(), infergate.ClassBulk, float32(i)))
			}
			waitFor(t, "bulk queued", func() bool { return s.QueueLen(infergate.ClassBulk) == 64 })
			close(exec.hang)
			for _, ch := range chans {
				if r := <-ch; r.err != nil {
					t.Fatal(r.err)
				}
			}
			exec.mu.Lock()
			defer exec.mu.Unlock()
			biggest := 0
			for _, sh := range exec.shapes[1:] {
				biggest = max(biggest, int(sh[0]))
			}
			if tc.realtime && (biggest > tc.wantMax || biggest == 0) || !tc.realtime && biggest != tc.wantMax {
				t.Fatalf("largest bulk batch %d, want at most %d (batches %v)", biggest, tc.wantMax, exec.shapes)
			}
		})
	}
}
