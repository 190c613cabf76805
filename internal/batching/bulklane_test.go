package batching

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/perfmodel"
)

// timedSession is a fake executor that reports a fixed busy time per batch
// of its own, as an idle-priority executor reports thread CPU time.
type timedSession struct {
	fake.Session
	busy time.Duration
}

func (t *timedSession) RunTimed(ctx context.Context, in []infergate.Tensor) ([]infergate.Tensor, time.Duration, error) {
	outs, err := t.Run(ctx, in)
	return outs, t.busy, err
}

func newBulkSched(t *testing.T, cfg Config, regular, bulk []Executor) *Scheduler {
	t.Helper()
	s := newSched(t, cfg, regular...)
	s.StartBulk(bulk...)
	return s
}

func submitMany(t *testing.T, s *Scheduler, c infergate.Class, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if _, err := s.Submit(t.Context(), c, []infergate.Tensor{fake.Input(4, float32(i))}, 1, 0); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func TestBulkWorkersTakeTheBulkLane(t *testing.T) {
	pol := Policy{Kind: Hybrid, MaxBatchSize: 8, MaxQueueDelay: time.Millisecond}
	tests := []struct {
		name             string
		share            float64
		class            infergate.Class
		wantRegular      bool // the regular instance runs some of it
		wantBulkInstance bool // the bulk instance runs some of it
	}{
		{"bulk goes to the bulk instance only", 0, infergate.ClassBulk, false, true},
		{"real-time never goes to the bulk instance", 0, infergate.ClassNormal, true, false},
		{"urgent never goes to the bulk instance", 0, infergate.ClassUrgent, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := &fake.Session{Latency: func(int) time.Duration { return 200 * time.Microsecond }}
			bulk := &fake.Session{Latency: func(int) time.Duration { return 200 * time.Microsecond }}
			s := newBulkSched(t, Config{Policies: policies(pol)}, []Executor{reg}, []Executor{bulk})
			s.SetBulkShare(tt.share)
			submitMany(t, s, tt.class, 64)
			if got := sum(reg.Batches()) > 0; got != tt.wantRegular {
				t.Errorf("regular instance ran %v items, want some: %v", reg.Batches(), tt.wantRegular)
			}
			if got := sum(bulk.Batches()) > 0; got != tt.wantBulkInstance {
				t.Errorf("bulk instance ran %v items, want some: %v", bulk.Batches(), tt.wantBulkInstance)
			}
			if total := sum(reg.Batches()) + sum(bulk.Batches()); total != 64 {
				t.Errorf("ran %d items, want 64", total)
			}
		})
	}
}

func TestBulkShareLetsRegularWorkersHelp(t *testing.T) {
	pol := Policy{Kind: Hybrid, MaxBatchSize: 4, MaxQueueDelay: time.Millisecond}
	// The bulk instance is slow; with a share granted, the regular
	// instance takes bulk batches too.
	reg := &fake.Session{Latency: func(int) time.Duration { return 100 * time.Microsecond }}
	bulk := &fake.Session{Latency: func(int) time.Duration { return 5 * time.Millisecond }}
	s := newBulkSched(t, Config{Policies: policies(pol)}, []Executor{reg}, []Executor{bulk})
	s.SetBulkShare(1)
	if got := s.BulkShare(); got != 1 {
		t.Fatalf("BulkShare = %v, want 1", got)
	}
	submitMany(t, s, infergate.ClassBulk, 64)
	if sum(reg.Batches()) == 0 {
		t.Errorf("with a share of 1 the regular instance ran no bulk batch (bulk instance: %v)", bulk.Batches())
	}
}

func TestBulkShareAccounting(t *testing.T) {
	s := New(Config{Model: "m", MaxBatchSize: 8})
	tests := []struct {
		share    float64
		rt, bulk time.Duration
		want     bool
	}{
		{0, 0, 0, false},
		{0.3, 0, 0, true},
		{0.3, 700 * time.Millisecond, 200 * time.Millisecond, true},
		{0.3, 700 * time.Millisecond, 400 * time.Millisecond, false},
		{1, time.Second, time.Second, true},
	}
	now := time.Unix(1000, 0)
	for _, tt := range tests {
		s.regBusy, s.regBusyAt = [2]float64{}, time.Time{}
		s.bulkShare = tt.share
		s.addRegBusyLocked(now, false, tt.rt)
		s.addRegBusyLocked(now, true, tt.bulk)
		if got := s.bulkShareLeftLocked(); got != tt.want {
			t.Errorf("share %v, real-time %v, bulk %v: share left = %v, want %v", tt.share, tt.rt, tt.bulk, got, tt.want)
		}
	}
	// Old busy time decays: after many half-lives a bulk-heavy past no
	// longer blocks the share.
	s.regBusy, s.regBusyAt = [2]float64{}, time.Time{}
	s.bulkShare = 0.3
	s.addRegBusyLocked(now, true, time.Second)
	s.addRegBusyLocked(now.Add(20*regBusyHalfLife), false, 100*time.Millisecond)
	if !s.bulkShareLeftLocked() {
		t.Errorf("decayed bulk time still blocks the share: %v", s.regBusy)
	}
}

func TestSpareSlots(t *testing.T) {
	lat := perfmodel.New()
	// Measured: a fixed 1 ms per batch plus 0.02 ms per item up to 8, then
	// 0.2 ms per item.
	for _, p := range []struct {
		n int
		d time.Duration
	}{{1, 1020 * time.Microsecond}, {2, 1040 * time.Microsecond}, {4, 1080 * time.Microsecond}, {8, 1160 * time.Microsecond}, {16, 2760 * time.Microsecond}} {
		lat.Observe(p.n, p.d)
	}
	tests := []struct {
		name        string
		bulkWorkers int
		n, limit    int
		want        int
	}{
		{"no bulk workers: every free slot", 0, 1, 16, 16},
		{"bulk workers: slots within 10% of the batch's latency", 1, 1, 16, 6}, // est(6) = 1.12 ms <= 1.1 x 1.02 ms < est(7)
		{"a batch already past the knee gets few", 1, 8, 16, 8},
		{"limit caps", 1, 1, 4, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Config{Model: "m", MaxBatchSize: 16, Latency: lat})
			s.bulkWorkers = tt.bulkWorkers
			if got := s.spareSlotsLocked(tt.n, tt.limit); got != tt.want {
				t.Errorf("spareSlots(%d, %d) = %d, want %d", tt.n, tt.limit, got, tt.want)
			}
		})
	}
}

func TestTimedExecutorBusyIsRecorded(t *testing.T) {
	lat := perfmodel.New()
	rec := &countingRecorder{}
	pol := Policy{Kind: Single}
	ex := &timedSession{busy: 7 * time.Millisecond}
	s := newBulkSched(t, Config{Policies: policies(pol), Latency: lat, Recorder: rec}, nil, []Executor{ex})
	submitMany(t, s, infergate.ClassBulk, 3)
	if d, ok := lat.Estimate(1); !ok || d != 7*time.Millisecond {
		t.Errorf("latency model has %v (%v), want the executor's own 7ms", d, ok)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, b := range rec.batches {
		if b.Busy != 7*time.Millisecond {
			t.Errorf("batch recorded busy %v, want 7ms", b.Busy)
		}
	}
}

func TestCloseDrainsBulkWithBulkWorkers(t *testing.T) {
	pol := Policy{Kind: Size, MaxBatchSize: 8, DefaultTimeout: time.Minute}
	reg := &fake.Session{}
	bulk := &fake.Session{Hang: make(chan struct{})}
	s := New(Config{Model: "m", MaxBatchSize: 8, Policies: policies(pol)})
	s.Start(reg)
	s.StartBulk(bulk)
	var chans []<-chan submitted
	for i := range 5 { // fewer than the size policy waits for
		chans = append(chans, submitAsync(s, t.Context(), infergate.ClassBulk, float32(i)))
	}
	waitFor(t, "queued", func() bool { return s.QueueLen(infergate.ClassBulk) == 5 })
	close(bulk.Hang)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		if r := <-ch; r.err != nil {
			t.Errorf("request %d: %v", i, r.err)
		}
	}
}

// queueDirect puts a request straight into class c's queue, as admit does.
func queueDirect(s *Scheduler, c infergate.Class, now time.Time) {
	s.q[c].pushBack(&request{ctx: context.Background(), class: c, lane: c, inputs: []infergate.Tensor{fake.Input(4, 1)}, items: 1, enq: now, deadline: now.Add(time.Minute),
		done: make(chan result, 1)})
	s.total++
}

func TestRegularWorkerFormation(t *testing.T) {
	const none = infergate.Class(infergate.NumClasses)
	now := time.Unix(1000, 0)
	pol := Policy{Kind: Size, MaxBatchSize: 4, DefaultTimeout: time.Minute}
	tests := []struct {
		name        string
		bulkWorkers int
		share       float64
		normal      int // normal requests queued (a full batch is 4)
		bulk        int
		wantClass   infergate.Class // of the batch formed; none: no batch
		wantWake    bool            // a timer (rather than waiting for a kick)
	}{
		{"only bulk queued, bulk workers: no batch, no polling", 1, 0, 0, 8, none, false},
		{"only bulk queued, no bulk workers: the regular worker runs it", 0, 0, 0, 8, infergate.ClassBulk, false},
		{"real-time first without a share", 1, 0, 4, 8, infergate.ClassNormal, false},
		{"a share puts bulk first even with real-time ready", 1, 0.5, 4, 8, infergate.ClassBulk, false},
		{"a partial real-time batch waits for its deadline; bulk is not the regular worker's", 1, 0, 2, 8, none, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Config{Model: "m", MaxBatchSize: 4, Policies: policies(pol), Clock: nil})
			s.bulkWorkers, s.bulkShare = tt.bulkWorkers, tt.share
			for range tt.normal {
				queueDirect(s, infergate.ClassNormal, now)
			}
			for range tt.bulk {
				queueDirect(s, infergate.ClassBulk, now)
			}
			var b batch
			wake := s.formLocked(now, &b, false)
			got := none
			if len(b.reqs) > 0 {
				got = b.reqs[0].class
			}
			if got != tt.wantClass {
				t.Errorf("formed a batch of class %d, want %d", got, tt.wantClass)
			}
			if !wake.IsZero() != tt.wantWake {
				t.Errorf("wake %v, want a timer: %v (a regular worker must not poll for bulk it may not take)", wake, tt.wantWake)
			}
		})
	}
}

func TestBulkDrainTimeCountsTheBulkLane(t *testing.T) {
	lat := perfmodel.New()
	lat.Observe(4, 10*time.Millisecond)
	now := time.Unix(1000, 0)
	s := New(Config{Model: "m", MaxBatchSize: 4, Policies: policies(Policy{Kind: Size, MaxBatchSize: 4}), Latency: lat})
	s.instances, s.bulkWorkers = 2, 1
	for range 40 { // real-time work the bulk worker never runs
		queueDirect(s, infergate.ClassNormal, now)
	}
	for range 8 {
		queueDirect(s, infergate.ClassBulk, now)
	}
	// 8 queued + 4 new = 3 batches of 4 on the one bulk worker.
	if d, ok := s.drainTimeLocked(infergate.ClassBulk, 4); !ok || d != 30*time.Millisecond {
		t.Errorf("bulk drain time %v (%v), want 30ms", d, ok)
	}
	// With a share, the regular workers and everything ahead count.
	s.bulkShare = 0.5
	// 40 + 8 + 4 = 52 items = 13 batches over 3 workers = 5 rounds.
	if d, ok := s.drainTimeLocked(infergate.ClassBulk, 4); !ok || d != 50*time.Millisecond {
		t.Errorf("bulk drain time with a share %v (%v), want 50ms", d, ok)
	}
}

func TestRegularWorkerWaitsForTheDeadlineNotAPoll(t *testing.T) {
	now := time.Unix(1000, 0)
	s := New(Config{Model: "m", MaxBatchSize: 4, Policies: policies(Policy{Kind: Size, MaxBatchSize: 4, DefaultTimeout: time.Minute})})
	s.bulkWorkers = 1
	queueDirect(s, infergate.ClassNormal, now)
	queueDirect(s, infergate.ClassBulk, now)
	var b batch
	wake := s.formLocked(now, &b, false)
	if len(b.reqs) != 0 || wake.Sub(now) < 50*time.Second {
		t.Errorf("formed %d, wake in %v: want no batch and a wake near the deadline", len(b.reqs), wake.Sub(now))
	}
}
