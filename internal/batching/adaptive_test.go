package batching

import (
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/perfmodel"
)

func TestAdaptiveReadiness(t *testing.T) {
	now := time.Unix(1000, 0)
	lat := perfmodel.New()
	lat.Observe(1, time.Millisecond)
	lat.Observe(8, 2*time.Millisecond)
	pol := Policy{Kind: Adaptive, MaxBatchSize: 8, MaxQueueDelay: 10 * time.Millisecond}
	tests := []struct {
		name     string
		queued   int
		age      time.Duration // of the oldest
		deadline time.Duration // from now; 0: none
		gap      time.Duration // measured mean inter-arrival gap; 0: unknown
		want     bool
		wantWake time.Duration // from now, when not ready
	}{
		{"full batch", 8, 0, 0, time.Millisecond, true, 0},
		{"arrivals come fast: wait for the bound", 2, 0, 0, 100 * time.Microsecond, false, 10 * time.Millisecond},
		{"the next arrival is not expected in time: fire", 2, 0, 0, 20 * time.Millisecond, true, 0},
		{"the oldest waited the bound", 2, 10 * time.Millisecond, 0, 100 * time.Microsecond, true, 0},
		{"no rate measured yet: wait for the bound", 1, 2 * time.Millisecond, 0, 0, false, 8 * time.Millisecond},
		// Deadline in 5 ms; a batch of 3 is estimated 1.286 ms; the margin
		// (est/4 + 1 ms) leaves fire-by at 5 - 1.607 - 1 = 2.39 ms.
		{"deadline slack bounds the wait", 2, 0, 5 * time.Millisecond, 100 * time.Microsecond, false, 2393 * time.Microsecond},
		{"deadline slack gone: fire", 2, 0, 2 * time.Millisecond, 100 * time.Microsecond, true, 0},
		// A 1 ms gap does not fit in the 2.39 ms of slack? It does: wait.
		{"a gap that fits the slack: wait", 2, 0, 5 * time.Millisecond, time.Millisecond, false, 2393 * time.Microsecond},
		{"a gap past the slack: fire", 2, 0, 5 * time.Millisecond, 3 * time.Millisecond, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Config{Model: "m", MaxBatchSize: 8, Policies: policies(pol), Latency: lat})
			c := infergate.ClassNormal
			for range tt.queued {
				queueDirect(s, c, now.Add(-tt.age))
				if tt.deadline > 0 {
					s.q[c].at(s.q[c].len() - 1).deadline = now.Add(tt.deadline)
				} else {
					s.q[c].at(s.q[c].len() - 1).deadline = time.Time{}
				}
			}
			s.arrivalGap[c] = tt.gap.Seconds()
			ready, wake := s.readyLocked(c, now)
			if ready != tt.want {
				t.Fatalf("ready = %v, want %v", ready, tt.want)
			}
			if !ready {
				if d := wake.Sub(now); d < tt.wantWake-5*time.Microsecond || d > tt.wantWake+5*time.Microsecond {
					t.Errorf("wake in %v, want %v", d, tt.wantWake)
				}
			}
		})
	}
}

func TestArrivalGapIsMeasured(t *testing.T) {
	s := New(Config{Model: "m", MaxBatchSize: 8, Policies: policies(Policy{Kind: Adaptive, MaxBatchSize: 8, MaxQueueDelay: time.Second})})
	now := time.Unix(1000, 0)
	for i := range 200 {
		r := &request{class: infergate.ClassNormal, lane: infergate.ClassNormal, items: 1, enq: now.Add(time.Duration(i) * 2 * time.Millisecond), done: make(chan result, 1)}
		if _, err := s.admit(r, 0); err != nil {
			t.Fatal(err)
		}
	}
	if g := s.arrivalGap[infergate.ClassNormal]; g < 0.00199 || g > 0.00201 {
		t.Errorf("measured gap %v s, want 0.002", g)
	}
	if s.arrivalGap[infergate.ClassUrgent] != 0 {
		t.Errorf("urgent gap measured without urgent arrivals")
	}
}

func TestAIMDController(t *testing.T) {
	s := New(Config{Model: "m", MaxBatchSize: 32, Policies: policies(Policy{Kind: AIMD, MaxBatchSize: 32, MaxQueueDelay: time.Millisecond,
		DefaultTimeout: 100 * time.Millisecond, TargetLatency: 10 * time.Millisecond})})
	c := infergate.ClassNormal
	if got := s.BatchLimit(c); got != 8 {
		t.Fatalf("starts at %d, want a quarter of 32", got)
	}
	steps := []struct {
		latency time.Duration
		want    int
	}{
		{5 * time.Millisecond, 9},   // within the target: +1
		{10 * time.Millisecond, 10}, // at the target: +1
		{11 * time.Millisecond, 5},  // a miss: halve
		{50 * time.Millisecond, 2},
		{50 * time.Millisecond, 1},
		{50 * time.Millisecond, 1}, // never below 1
	}
	for i, st := range steps {
		s.mu.Lock()
		s.aimdLocked(c, st.latency)
		s.mu.Unlock()
		if got := s.BatchLimit(c); got != st.want {
			t.Fatalf("step %d (%v): limit %d, want %d", i, st.latency, got, st.want)
		}
	}
	for range 100 {
		s.mu.Lock()
		s.aimdLocked(c, time.Millisecond)
		s.mu.Unlock()
	}
	if got := s.BatchLimit(c); got != 32 {
		t.Errorf("after a long good run the limit is %d, want the policy's 32", got)
	}
	// The limit is what batches are formed at.
	s.aimdMax[c] = 3
	now := time.Unix(1000, 0)
	for range 5 {
		queueDirect(s, c, now)
	}
	var b batch
	s.formLocked(now, &b, false)
	if b.items != 3 {
		t.Errorf("formed %d items, want the AIMD limit 3", b.items)
	}
}

func TestAIMDLearnsFromExecutedBatches(t *testing.T) {
	// A backend whose batches take 2 ms per item: under a 12 ms target the
	// limit settles where a batch's latency crosses the target.
	sess := &fake.Session{Latency: func(n int) time.Duration { return time.Duration(n) * 2 * time.Millisecond }}
	pol := Policy{Kind: AIMD, MaxBatchSize: 16, MaxQueueDelay: time.Millisecond, DefaultTimeout: time.Second, TargetLatency: 12 * time.Millisecond}
	s := newSched(t, Config{MaxBatchSize: 16, Policies: policies(pol)}, sess)
	submitMany(t, s, infergate.ClassNormal, 200)
	if got := s.BatchLimit(infergate.ClassNormal); got < 1 || got > 8 {
		t.Errorf("limit %d after 200 requests, want at most 8 (a batch of 6 already takes 12 ms)", got)
	}
}
