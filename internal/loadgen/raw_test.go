package loadgen

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate"
)

// fakeSession is a hand-written backend.Session: it checks its inputs,
// takes a fixed time per batch, and returns one logit per item.
type fakeSession struct {
	specs   []infergate.TensorSpec
	perRun  time.Duration
	failAt  int64 // the n-th run fails (0: never)
	runs    atomic.Int64
	badMsgs atomic.Value
}

func (s *fakeSession) Inputs() []infergate.TensorSpec { return s.specs }
func (s *fakeSession) Outputs() []infergate.TensorSpec {
	return []infergate.TensorSpec{{Name: "logits", DataType: infergate.FP32, Shape: []int64{-1, 1}}}
}
func (s *fakeSession) Close() error { return nil }

func (s *fakeSession) Run(ctx context.Context, in []infergate.Tensor) ([]infergate.Tensor, error) {
	n := s.runs.Add(1)
	if n == s.failAt {
		return nil, errors.New("boom")
	}
	if len(in) != len(s.specs) {
		s.badMsgs.Store("wrong number of inputs")
		return nil, errors.New("bad inputs")
	}
	b := in[0].Shape[0]
	for i, t := range in {
		spec := s.specs[i]
		if t.Name != spec.Name || t.DataType != spec.DataType || len(t.Shape) != len(spec.Shape) ||
			int64(len(t.Data)) != t.NumElements()*int64(t.DataType.Size()) || t.Shape[0] != b {
			s.badMsgs.Store(fmt.Sprintf("input %d: %s %s %v, %d bytes", i, t.Name, t.DataType, t.Shape, len(t.Data)))
			return nil, errors.New("bad inputs")
		}
		if t.DataType == infergate.FP32 {
			for j := 0; j < len(t.Data); j += 4 {
				v := math.Float32frombits(binary.LittleEndian.Uint32(t.Data[j:]))
				if !(v >= -1 && v < 1) {
					s.badMsgs.Store("fp32 value out of range")
					return nil, errors.New("bad inputs")
				}
			}
		}
	}
	time.Sleep(s.perRun)
	return []infergate.Tensor{{Name: "logits", DataType: infergate.FP32, Shape: []int64{b, 1}, Data: make([]byte, 4*b)}}, nil
}

func TestRaw(t *testing.T) {
	sess := &fakeSession{
		specs: []infergate.TensorSpec{
			{Name: "input", DataType: infergate.FP32, Shape: []int64{-1, 768}},
			{Name: "mask", DataType: infergate.INT64, Shape: []int64{-1, -1}},
			{Name: "half", DataType: infergate.FP16, Shape: []int64{-1, 4}},
		},
		perRun: 2 * time.Millisecond,
	}
	res, err := Raw(context.Background(), sess, 8, 150*time.Millisecond)
	if err != nil {
		t.Fatalf("%v (%v)", err, sess.badMsgs.Load())
	}
	t.Logf("%+v", res)
	if res.BatchSize != 8 || res.Batches < 10 || res.Batches > 80 {
		t.Errorf("batch %d, %d batches: want 8 and about 70 (2ms each for 150ms)", res.BatchSize, res.Batches)
	}
	if int64(res.Batches) >= sess.runs.Load() {
		t.Errorf("%d measured of %d runs: want warmup runs excluded", res.Batches, sess.runs.Load())
	}
	// At most 8 items per 2ms.
	if res.ItemsPerSec <= 0 || res.ItemsPerSec > 4000 {
		t.Errorf("items/s %.1f, want (0, 4000]", res.ItemsPerSec)
	}
	if res.P50 < 2*time.Millisecond || res.P99 < res.P50 {
		t.Errorf("p50 %v p99 %v", res.P50, res.P99)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m["p50_ms"] == nil || m["items_per_sec"] == nil {
		t.Errorf("json %s", b)
	}
}

func TestRawErrors(t *testing.T) {
	sess := &fakeSession{specs: []infergate.TensorSpec{{Name: "input", DataType: infergate.FP32, Shape: []int64{-1, 4}}}, failAt: 5}
	if _, err := Raw(context.Background(), sess, 2, 100*time.Millisecond); err == nil {
		t.Error("failing run: want an error")
	}
	if _, err := Raw(context.Background(), sess, 0, time.Second); err == nil {
		t.Error("batch 0: want an error")
	}
	scalar := &fakeSession{specs: []infergate.TensorSpec{{Name: "x", DataType: infergate.FP32}}}
	if _, err := Raw(context.Background(), scalar, 1, time.Second); err == nil {
		t.Error("scalar input: want an error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Raw(ctx, &fakeSession{specs: sess.specs}, 1, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: err %v", err)
	}
}

func TestFloat16Bits(t *testing.T) {
	for f, want := range map[float32]uint16{0: 0, 1: 0x3c00, -2: 0xc000, 0.5: 0x3800, 65504: 0x7bff, 1e6: 0x7c00, 1e-10: 0} {
		if got := float16Bits(f); got != want {
			t.Errorf("float16Bits(%v) = %#04x, want %#04x", f, got, want)
		}
	}
}
