package loadgen

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
)

// RawResult reports the runtime alone: no HTTP, no queueing, no batching
// policy, one batch of BatchSize items at a time.
type RawResult struct {
	BatchSize   int
	Batches     int // measured batches
	ItemsPerSec float64
	// Per-batch latency quantiles.
	P50, P99 time.Duration
}

// MarshalJSON writes latencies as float milliseconds.
func (r *RawResult) MarshalJSON() ([]byte, error) {
	type rawJSON struct {
		BatchSize   int     `json:"batch_size"`
		Batches     int     `json:"batches"`
		ItemsPerSec float64 `json:"items_per_sec"`
		P50         float64 `json:"p50_ms"`
		P99         float64 `json:"p99_ms"`
	}
	return json.Marshal(rawJSON{r.BatchSize, r.Batches, r.ItemsPerSec, ms(r.P50), ms(r.P99)})
}

// Raw measures sess on its own: it builds a batch of b items of random data
// from sess.Inputs() (the first dimension set to b, other dynamic
// dimensions set to 1), runs it a few times to warm up (at least 2 runs,
// up to a tenth of d capped at 2s), then runs it back to back for d and
// reports items per second and per-batch latency.
//
// Float inputs get seeded random values in [-1, 1); integer and BOOL inputs
// are all 1 (valid as token ids and attention masks alike).
func Raw(ctx context.Context, sess backend.Session, b int, d time.Duration) (*RawResult, error) {
	if sess == nil {
		return nil, errors.New("loadgen: raw: nil session")
	}
	if b <= 0 {
		return nil, fmt.Errorf("loadgen: raw: batch size must be > 0, got %d", b)
	}
	if d <= 0 {
		return nil, fmt.Errorf("loadgen: raw: duration must be > 0, got %v", d)
	}
	inputs, err := rawInputs(sess.Inputs(), b)
	if err != nil {
		return nil, err
	}
	run := func() (time.Duration, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		t0 := time.Now()
		if _, err := sess.Run(ctx, inputs); err != nil {
			return 0, fmt.Errorf("loadgen: raw: run batch of %d: %w", b, err)
		}
		return time.Since(t0), nil
	}

	warm := min(d/10, 2*time.Second)
	for i, t0 := 0, time.Now(); i < 2 || time.Since(t0) < warm; i++ {
		if _, err := run(); err != nil {
			return nil, err
		}
	}

	var lats []time.Duration
	start := time.Now()
	for len(lats) == 0 || time.Since(start) < d {
		lat, err := run()
		if err != nil {
			return nil, err
		}
		lats = append(lats, lat)
	}
	elapsed := time.Since(start)
	slices.Sort(lats)
	return &RawResult{
		BatchSize:   b,
		Batches:     len(lats),
		ItemsPerSec: float64(len(lats)*b) / elapsed.Seconds(),
		P50:         quantile(lats, 0.50),
		P99:         quantile(lats, 0.99),
	}, nil
}

// rawInputs builds one batch of b items for specs.
func rawInputs(specs []infergate.TensorSpec, b int) ([]infergate.Tensor, error) {
	if len(specs) == 0 {
		return nil, errors.New("loadgen: raw: session has no inputs")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([]infergate.Tensor, len(specs))
	for i, s := range specs {
		if len(s.Shape) == 0 {
			return nil, fmt.Errorf("loadgen: raw: input %q is a scalar: no batch dimension", s.Name)
		}
		size := s.DataType.Size()
		if size == 0 {
			return nil, fmt.Errorf("loadgen: raw: input %q: unsupported data type %q", s.Name, s.DataType)
		}
		shape := make([]int64, len(s.Shape))
		shape[0] = int64(b)
		for j := 1; j < len(shape); j++ {
			shape[j] = s.Shape[j]
			if shape[j] < 0 {
				shape[j] = 1
			}
		}
		n := infergate.NumElements(shape)
		if n*int64(size) > 1<<32 {
			return nil, fmt.Errorf("loadgen: raw: input %q: shape %v is too large", s.Name, shape)
		}
		data := make([]byte, int(n)*size)
		for k := range int(n) {
			fillElement(data[k*size:(k+1)*size], s.DataType, rng)
		}
		out[i] = infergate.Tensor{Name: s.Name, DataType: s.DataType, Shape: shape, Data: data}
	}
	return out, nil
}

// fillElement writes one element of type dt into p (len(p) == dt.Size()).
func fillElement(p []byte, dt infergate.DataType, rng *rand.Rand) {
	le := binary.LittleEndian
	switch dt {
	case infergate.FP32:
		le.PutUint32(p, math.Float32bits(rng.Float32()*2-1))
	case infergate.FP64:
		le.PutUint64(p, math.Float64bits(rng.Float64()*2-1))
	case infergate.FP16:
		le.PutUint16(p, float16Bits(rng.Float32()*2-1))
	default: // integers and BOOL: 1
		clear(p)
		p[0] = 1
	}
}

// float16Bits converts f to IEEE half precision, truncating the mantissa and
// flushing values below the normal range to zero. Good enough for random
// test data.
func float16Bits(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int(bits>>23&0xff) - 127 + 15
	mant := bits & 0x7fffff
	switch {
	case exp <= 0:
		return sign
	case exp >= 31:
		return sign | 0x7c00
	}
	return sign | uint16(exp)<<10 | uint16(mant>>13)
}
