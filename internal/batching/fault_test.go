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

// poisonSession panics on any batch holding a row whose first value is
// the poison, as a model that crashes on some input would.
type poisonSession struct {
	fake.Session
	poison float32
}

func (p *poisonSession) Run(ctx context.Context, in []infergate.Tensor) ([]infergate.Tensor, error) {
	rows := int(in[0].Shape[0])
	vals := fake.Floats(in[0])
	for i := range rows {
		if vals[i*4] == p.poison {
			panic("poisoned input")
		}
	}
	return p.Session.Run(ctx, in)
}

// TestPanicOnOneItemInAThousand: a runtime that panics on one item in
// 1,000 fails that item alone; the scheduler lives and every other item is
// answered correctly.
func TestPanicOnOneItemInAThousand(t *testing.T) {
	tests := []struct {
		name string
		pol  Policy
	}{
		{"hybrid batches", Policy{Kind: Hybrid, MaxBatchSize: 16, MaxQueueDelay: 2 * time.Millisecond, MaxQueueSize: 2000}},
		{"single", Policy{Kind: Single, MaxQueueSize: 2000}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSched(t, Config{MaxBatchSize: 16, Policies: policies(tc.pol)}, &poisonSession{poison: 500}, &poisonSession{poison: 500})
			const n = 1000
			errs := make([]error, n)
			vals := make([]float32, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := s.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, float32(i))}, 1, 0)
					errs[i] = err
					if err == nil {
						vals[i] = fake.Floats(resp.Outputs[0])[0]
					}
				}()
			}
			wg.Wait()
			failed := 0
			for i, err := range errs {
				switch {
				case i == 500:
					if infergate.ErrorCode(err) != infergate.EInternal {
						t.Errorf("the poisoned item: %v, want an internal error", err)
					}
				case err != nil:
					failed++
					t.Errorf("item %d failed with its batch-mate: %v", i, err)
				case vals[i] != float32(4*i):
					t.Errorf("item %d got %v, want %v", i, vals[i], 4*i)
				}
			}
			t.Logf("%d of %d items failed besides the poisoned one", failed, n-1)
			// The scheduler still serves.
			if r := <-submitAsync(s, t.Context(), infergate.ClassNormal, 1); r.err != nil {
				t.Fatalf("after the panics: %v", r.err)
			}
		})
	}
}

// TestBatchStopsAtTheLastDeadline: a runtime that honors its context (a
// remote backend's upstream call) is stopped once every request of the
// batch has given up on it (twice its timeout), and the requests hear a
// deadline error.
func TestBatchStopsAtTheLastDeadline(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	slow := &fake.Session{Latency: func(int) time.Duration { return time.Hour }} // returns at ctx.Done
	s := newSched(t, Config{Clock: clk, MaxBatchSize: 4, Policies: policies(Policy{Kind: Single})}, slow)
	ch := make(chan error, 1)
	go func() {
		_, err := s.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, 1)}, 1, 100*time.Millisecond)
		ch <- err
	}()
	waitFor(t, "the batch to run", func() bool { return len(slow.Batches()) == 1 })
	clk.Advance(100 * time.Millisecond)
	select {
	case err := <-ch:
		t.Fatalf("answered at the deadline while the batch runs: %v", err)
	default:
	}
	clk.Advance(100 * time.Millisecond)
	waitFor(t, "the batch to stop", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.running) == 0 })
	if err := <-ch; infergate.ErrorCode(err) != infergate.EDeadline {
		t.Fatalf("a request whose batch ran past its deadline: %v, want a deadline error", err)
	}
	if stalled, _ := s.Stalled(); stalled {
		t.Fatal("the worker is still in the batch")
	}
}
