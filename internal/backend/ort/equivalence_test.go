//go:build cgo

package ort

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/backend/gorun"
	"github.com/infergate/infergate/internal/onnx"
)

// TestEquivalenceWithGorun runs the reference MLP through ONNX Runtime and
// the pure-Go runtime on the same random batch of 4 and compares the logits.
//
// Error measure: max_i |ort_i - go_i| / max_j |go_j|, i.e. the largest
// absolute difference relative to the largest logit magnitude of the batch
// (floored at 1e-6 so an all-zero output cannot divide by zero). Both
// runtimes accumulate float32 dot products of length 768 to 3072 in
// different orders, so per-element relative error is meaningless for logits
// near zero; scaling by the batch's largest magnitude is not. Limit 1e-4.
func TestEquivalenceWithGorun(t *testing.T) {
	ortRT := newRuntime(t)
	path := filepath.Join(t.TempDir(), "mlp.onnx")
	if err := onnx.WriteReferenceModel(path); err != nil {
		t.Fatal(err)
	}
	var goRT backend.Runtime = gorun.New()

	const n = 4
	in := []infergate.Tensor{f32Tensor(onnx.ReferenceInput, []int64{n, 768}, randomBatch(2024, n, 768))}
	run := func(rt backend.Runtime) infergate.Tensor {
		t.Helper()
		s := open(t, rt, path, 2)
		out, err := s.Run(context.Background(), in)
		if err != nil {
			t.Fatalf("%s: %v", rt.Name(), err)
		}
		if len(out) != 1 || out[0].DataType != infergate.FP32 || !slices.Equal(out[0].Shape, []int64{n, 16}) {
			t.Fatalf("%s: output %+v", rt.Name(), out)
		}
		return out[0]
	}
	want := f32s(run(goRT))
	got := f32s(run(ortRT))

	maxAbs, maxDiff := 1e-6, 0.0
	worst := 0
	for i := range want {
		maxAbs = math.Max(maxAbs, math.Abs(float64(want[i])))
		if math.IsNaN(float64(got[i])) || math.IsNaN(float64(want[i])) {
			t.Fatalf("NaN at %d: ort %v, gorun %v", i, got[i], want[i])
		}
		if d := math.Abs(float64(got[i] - want[i])); d > maxDiff {
			maxDiff, worst = d, i
		}
	}
	rel := maxDiff / maxAbs
	t.Logf("max |diff| %.3g at %d (ort %v, gorun %v), max |logit| %.3g, relative %.3g",
		maxDiff, worst, got[worst], want[worst], maxAbs, rel)
	if rel > 1e-4 {
		t.Errorf("relative error %.3g > 1e-4", rel)
	}
}
