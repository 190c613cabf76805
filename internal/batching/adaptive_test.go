package batching

import (
	"testing"
	"time"

	"github.com/infergate/infergate"
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
		r := &request{class: infergate.ClassNormal, items: 1, enq: now.Add(time.Duration(i) * 2 * time.Millisecond), done: make(chan result, 1)}
		if _, err := s.admit(r); err != nil {
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
