package batching

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
)

// noop is an executor that returns one output row per item at once, so
// that the benchmarks measure the scheduler alone.
type noop struct{}

func (noop) Run(_ context.Context, in []infergate.Tensor) ([]infergate.Tensor, error) {
	n := in[0].Shape[0]
	return []infergate.Tensor{{Name: "y", DataType: infergate.FP32, Shape: []int64{n, 1}, Data: make([]byte, 4*n)}}, nil
}

// BenchmarkSubmit measures the scheduler's overhead per request: admission,
// queueing, batch formation, concatenation, dispatch to a no-op executor
// and the hand-back of the result. ns/op under RunParallel is the inverse
// of throughput across all producers.
func BenchmarkSubmit(b *testing.B) {
	for _, tc := range []struct {
		pol       Policy
		producers int
	}{
		{Policy{Kind: Single}, 1},
		{Policy{Kind: Single}, 64},
		{Policy{Kind: Hybrid, MaxBatchSize: 32}, 64},
		// The timeout lets the last, partial batch go out on deadline pressure.
		{Policy{Kind: Size, MaxBatchSize: 32, DefaultTimeout: 20 * time.Millisecond}, 64},
		{Policy{Kind: Hybrid, MaxBatchSize: 32}, 256},
	} {
		b.Run(fmt.Sprintf("policy=%s/maxBatch=%d/producers=%d", tc.pol.Kind, max(tc.pol.MaxBatchSize, 1), tc.producers), func(b *testing.B) {
			s := New(Config{Model: "m", MaxBatchSize: 32, Policies: policies(tc.pol)})
			s.Start(noop{})
			defer func() { _ = s.Close(context.Background()) }()
			in := []infergate.Tensor{fake.Input(4, 1)}
			b.ReportAllocs()
			b.SetParallelism(tc.producers)
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := s.Submit(ctx, infergate.ClassNormal, in, 1, 0); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkFormBatch measures batch formation alone on a full queue.
func BenchmarkFormBatch(b *testing.B) {
	for _, size := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("maxBatch=%d", size), func(b *testing.B) {
			s := New(Config{Model: "m", MaxBatchSize: size, Policies: policies(Policy{Kind: Hybrid, MaxBatchSize: size})})
			ctx := context.Background()
			in := []infergate.Tensor{fake.Input(4, 1)}
			var bt batch
			b.ReportAllocs()
			for b.Loop() {
				s.mu.Lock()
				for range size {
					s.q[infergate.ClassNormal].pushBack(&request{ctx: ctx, class: infergate.ClassNormal, lane: infergate.ClassNormal, inputs: in, items: 1, done: make(chan result, 1)})
					s.total++
				}
				s.formLocked(s.clock.Now(), &bt, false)
				s.mu.Unlock()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/request")
		})
	}
}

// BenchmarkEnqueue measures admission alone: the queue limits check and
// the push, with the queue drained every 1,024 requests outside the timer.
func BenchmarkEnqueue(b *testing.B) {
	s := New(Config{Model: "m", MaxBatchSize: 32, Policies: policies(Policy{Kind: Hybrid, MaxBatchSize: 32, MaxQueueSize: 1 << 20})})
	ctx := context.Background()
	in := []infergate.Tensor{fake.Input(4, 1)}
	reqs := make([]request, 1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := &reqs[i]
		*r = request{ctx: ctx, class: infergate.ClassNormal, lane: infergate.ClassNormal, inputs: in, items: 1}
		if _, err := s.admit(r, 0); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(reqs) {
			b.StopTimer()
			s.mu.Lock()
			for s.q[infergate.ClassNormal].len() > 0 {
				s.q[infergate.ClassNormal].popFront()
			}
			s.total = 0
			s.mu.Unlock()
			i = 0
			b.StartTimer()
		}
	}
}
