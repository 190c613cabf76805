package batching

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/clock"
)

// TestSubmitLaneServesInTheLanesMode: a normal request sent to the urgent
// lane runs under the urgent policy and is accounted as normal in the
// urgent lane's mode.
func TestSubmitLaneServesInTheLanesMode(t *testing.T) {
	rec := &countingRecorder{}
	pols := [infergate.NumClasses]Policy{
		{Kind: Single, Mode: infergate.ModeRealtime},
		{Kind: Hybrid, MaxBatchSize: 8, MaxQueueDelay: time.Hour, Mode: infergate.ModeHybrid},
		{Kind: Hybrid, MaxBatchSize: 8, MaxQueueDelay: time.Hour, Mode: infergate.ModeBatch},
	}
	s := newSched(t, Config{Policies: pols, Recorder: rec}, &fake.Session{})
	tests := []struct {
		name     string
		class    infergate.Class
		lane     infergate.Class
		wantMode infergate.Mode
	}{
		// Under the normal lane's hour-long delay a lone request would
		// wait; in the urgent lane (single) it runs at once.
		{"normal in the urgent lane", infergate.ClassNormal, infergate.ClassUrgent, infergate.ModeRealtime},
		{"urgent in its own lane", infergate.ClassUrgent, infergate.ClassUrgent, infergate.ModeRealtime},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			resp, err := s.SubmitLane(ctx, tc.class, tc.lane, []infergate.Tensor{fake.Input(4, 1)}, 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			if resp.BatchSize != 1 {
				t.Fatalf("batch %d", resp.BatchSize)
			}
			rec.mu.Lock()
			b := rec.batches[len(rec.batches)-1]
			rec.mu.Unlock()
			if b.ItemsBy[tc.class] != 1 || b.Modes[tc.class] != tc.wantMode {
				t.Fatalf("batch accounted %v items of %s in mode %s, want 1 in %s", b.ItemsBy, tc.class, b.Modes[tc.class], tc.wantMode)
			}
		})
	}
	if _, err := s.SubmitLane(t.Context(), infergate.ClassNormal, infergate.Class(9), nil, 1, 0); infergate.ErrorCode(err) != infergate.EInvalid {
		t.Fatalf("unknown lane: %v", err)
	}
}

// TestSetPolicyAppliesToQueuedRequests: a request waiting under a long
// delay fires once the policy changes to one that does not wait.
func TestSetPolicyAppliesToQueuedRequests(t *testing.T) {
	s := newSched(t, Config{Policies: policies(Policy{Kind: Hybrid, MaxBatchSize: 8, MaxQueueDelay: time.Hour})}, &fake.Session{})
	ch := submitAsync(s, t.Context(), infergate.ClassNormal, 1)
	waitFor(t, "the request to queue", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	select {
	case r := <-ch:
		t.Fatalf("ran before the policy changed: %+v", r)
	default:
	}
	if err := s.SetPolicy(infergate.ClassNormal, Policy{Kind: Single}); err != nil {
		t.Fatal(err)
	}
	if r := <-ch; r.err != nil {
		t.Fatal(r.err)
	}
	if p := s.Policy(infergate.ClassNormal); p.Kind != Single || p.MaxBatchSize != 1 || p.Mode != infergate.ModeRealtime {
		t.Fatalf("policy after set: %+v", p)
	}
	for _, bad := range []Policy{{Kind: "nope"}, {Kind: Hybrid, MaxBatchSize: 99}, {Kind: Adaptive}} {
		if err := s.SetPolicy(infergate.ClassNormal, bad); infergate.ErrorCode(err) != infergate.EInvalid {
			t.Errorf("SetPolicy(%+v) = %v, want invalid", bad, err)
		}
	}
}

// TestRetireDropsNothing: workers retire at batch boundaries while
// requests flow; every accepted request is answered and one worker stays.
func TestRetireDropsNothing(t *testing.T) {
	sessions := make([]*fake.Session, 4)
	execs := make([]Executor, 4)
	for i := range sessions {
		sessions[i] = &fake.Session{Latency: func(int) time.Duration { return 200 * time.Microsecond }}
		execs[i] = sessions[i]
	}
	s := newSched(t, Config{Policies: policies(Policy{Kind: Hybrid, MaxBatchSize: 4, MaxQueueDelay: time.Millisecond, MaxQueueSize: 10000})}, execs...)
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, float32(i))}, 1, 0); err != nil {
				errs <- err
			}
		}()
	}
	retired := map[Executor]bool{}
	for range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		e, err := s.Retire(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if retired[e] {
			t.Fatal("the same executor retired twice")
		}
		retired[e] = true
	}
	if _, err := s.Retire(t.Context()); infergate.ErrorCode(err) != infergate.EConflict {
		t.Fatalf("retiring the last worker: %v, want conflict", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("request failed: %v", err)
	}
	if n := s.Instances(); n != 1 {
		t.Fatalf("%d instances left, want 1", n)
	}
	// A worker added back takes work.
	extra := &fake.Session{}
	s.Start(extra)
	if n := s.Instances(); n != 2 {
		t.Fatalf("%d instances after adding one, want 2", n)
	}
	if r := <-submitAsync(s, t.Context(), infergate.ClassNormal, 1); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestBusySecondsAndOldestWait(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	s := newSched(t, Config{Clock: clk, Policies: policies(Policy{Kind: Hybrid, MaxBatchSize: 8, MaxQueueDelay: time.Hour})}, clockedExec{clk})
	if d := s.OldestWait(); d != 0 {
		t.Fatalf("oldest wait with nothing queued: %v", d)
	}
	ch := submitAsync(s, t.Context(), infergate.ClassNormal, 1)
	waitFor(t, "the request to queue", func() bool { return s.QueueLen(infergate.ClassNormal) == 1 })
	clk.Advance(3 * time.Second)
	if d := s.OldestWait(); d != 3*time.Second {
		t.Fatalf("oldest wait %v, want 3s", d)
	}
	if b := s.BusySeconds(); b != 0 {
		t.Fatalf("busy before any batch: %v", b)
	}
	clk.Advance(time.Hour) // the delay passes: the batch fires
	if r := <-ch; r.err != nil {
		t.Fatal(r.err)
	}
	if b := s.BusySeconds(); b != 0.002 {
		t.Fatalf("busy %v s, want the batch's 0.002", b)
	}
}

// clockedExec runs a batch in 2 ms of its fake clock.
type clockedExec struct{ clk *clock.Fake }

func (e clockedExec) Run(ctx context.Context, in []infergate.Tensor) ([]infergate.Tensor, error) {
	e.clk.Advance(2 * time.Millisecond)
	return (&fake.Session{}).Run(ctx, in)
}

// TestSplitClassIsServedFIFO: while normal requests are routed to both the
// urgent lane and their own, the older of the two heads runs first; an
// urgent request at the urgent lane's head keeps its priority.
func TestSplitClassIsServedFIFO(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	s := New(Config{Model: "m", MaxBatchSize: 8, Clock: clk, Policies: policies(Policy{Kind: Single})})
	push := func(class, lane infergate.Class) *request {
		r := &request{ctx: context.Background(), class: class, lane: lane, inputs: []infergate.Tensor{fake.Input(4, 1)}, items: 1, enq: clk.Now(), done: make(chan result, 1)}
		if _, err := s.admit(r, 0); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Millisecond)
		return r
	}
	form := func() *request {
		var b batch
		s.mu.Lock()
		s.formLocked(clk.Now(), &b, false)
		s.mu.Unlock()
		if len(b.reqs) != 1 {
			t.Fatalf("formed %d requests", len(b.reqs))
		}
		return b.reqs[0]
	}
	n1 := push(infergate.ClassNormal, infergate.ClassNormal)
	r1 := push(infergate.ClassNormal, infergate.ClassUrgent)
	n2 := push(infergate.ClassNormal, infergate.ClassNormal)
	u1 := push(infergate.ClassUrgent, infergate.ClassUrgent)
	for i, want := range []*request{n1, r1, u1, n2} {
		if got := form(); got != want {
			t.Fatalf("batch %d took the request enqueued at %v, want %v", i, got.enq, want.enq)
		}
	}
	// An urgent head goes first even when a normal request is older.
	n3 := push(infergate.ClassNormal, infergate.ClassNormal)
	u2 := push(infergate.ClassUrgent, infergate.ClassUrgent)
	if got := form(); got != u2 {
		t.Fatal("an urgent request waited for an older normal one")
	}
	if got := form(); got != n3 {
		t.Fatal("the normal request did not follow")
	}
}
