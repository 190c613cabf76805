// Package fake is a hand-written backend for tests: a model with one FP32
// input [N,D] and one FP32 output [N,1] holding each row's sum, with
// controllable latency, errors and a hang switch.
package fake

import (
	"context"
	"encoding/binary"
	"math"
	"sync"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
)

// Session is a fake model instance. Set fields before use.
type Session struct {
	// Dim is the input's second dimension. Defaults to 4.
	Dim int
	// Latency returns how long a batch of n items takes; the fake sleeps
	// that long (or until ctx ends). Optional.
	Latency func(n int) time.Duration
	// Err, if it returns non-nil for a batch, fails it.
	Err func(inputs []infergate.Tensor) error
	// Hang, if non-nil, blocks every Run until it is closed.
	Hang chan struct{}

	mu      sync.Mutex
	batches []int
}

var (
	_ backend.Session = (*Session)(nil)
	_ backend.Runtime = Runtime{}
)

func (s *Session) dim() int {
	if s.Dim == 0 {
		return 4
	}
	return s.Dim
}

// Inputs implements backend.Session.
func (s *Session) Inputs() []infergate.TensorSpec {
	return []infergate.TensorSpec{{Name: "input", DataType: infergate.FP32, Shape: []int64{-1, int64(s.dim())}}}
}

// Outputs implements backend.Session.
func (s *Session) Outputs() []infergate.TensorSpec {
	return []infergate.TensorSpec{{Name: "sum", DataType: infergate.FP32, Shape: []int64{-1, 1}}}
}

// Run sums each row of the input.
func (s *Session) Run(ctx context.Context, in []infergate.Tensor) ([]infergate.Tensor, error) {
	n := int(in[0].Shape[0])
	s.mu.Lock()
	s.batches = append(s.batches, n)
	s.mu.Unlock()
	if s.Hang != nil {
		select {
		case <-s.Hang:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if s.Latency != nil {
		if d := s.Latency(n); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
	}
	if s.Err != nil {
		if err := s.Err(in); err != nil {
			return nil, err
		}
	}
	d := s.dim()
	out := make([]byte, 4*n)
	for i := range n {
		var sum float32
		for j := range d {
			off := 4 * (i*d + j)
			sum += math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data[off:]))
		}
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(sum))
	}
	return []infergate.Tensor{{Name: "sum", DataType: infergate.FP32, Shape: []int64{int64(n), 1}, Data: out}}, nil
}

// Close implements backend.Session.
func (s *Session) Close() error { return nil }

// Batches returns the sizes of the batches run so far.
func (s *Session) Batches() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.batches...)
}

// Input builds an input tensor of n rows where row i is filled with vals[i].
func Input(dim int, vals ...float32) infergate.Tensor {
	data := make([]byte, 0, 4*dim*len(vals))
	for _, v := range vals {
		for range dim {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
		}
	}
	return infergate.Tensor{Name: "input", DataType: infergate.FP32, Shape: []int64{int64(len(vals)), int64(dim)}, Data: data}
}

// Floats decodes an FP32 tensor's data.
func Floats(t infergate.Tensor) []float32 {
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out
}

// Runtime opens fresh fake sessions whatever the path; New makes each.
type Runtime struct {
	New func() *Session
}

// Name implements backend.Runtime.
func (Runtime) Name() string { return "fake" }

// Open implements backend.Runtime.
func (r Runtime) Open(string, backend.Options) (backend.Session, error) {
	if r.New != nil {
		return r.New(), nil
	}
	return &Session{}, nil
}
