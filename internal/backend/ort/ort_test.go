//go:build cgo

package ort

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/assets"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/onnx"
)

// fetched caches asset paths for the test binary.
var fetched sync.Map // asset name -> string

// asset fetches a pinned asset into the shared cache (npm pack on first
// use). Tests skip only off linux/amd64, where the pinned library does not
// run; anywhere else a failing fetch fails the test.
func asset(tb testing.TB, a assets.Asset) string {
	tb.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		tb.Skipf("the pinned onnxruntime library is linux/amd64 only, this is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	if p, ok := fetched.Load(a.Name); ok {
		return p.(string)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	p, err := assets.Fetch(ctx, assets.DefaultCacheDir(), a)
	if err != nil {
		tb.Fatalf("fetching %s: %v", a.Name, err)
	}
	fetched.Store(a.Name, p)
	return p
}

func newRuntime(tb testing.TB) *Runtime {
	tb.Helper()
	r, err := New(asset(tb, assets.ORTLibrary))
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

var (
	mlpOnce sync.Once
	mlpPath string
	mlpErr  error
	mlpDir  string
)

// referenceModel writes the reference MLP once per test binary.
func referenceModel(tb testing.TB) string {
	tb.Helper()
	mlpOnce.Do(func() {
		mlpDir, mlpErr = os.MkdirTemp("", "infergate-ort-test-")
		if mlpErr == nil {
			mlpPath = filepath.Join(mlpDir, "mlp.onnx")
			mlpErr = onnx.WriteReferenceModel(mlpPath)
		}
	})
	if mlpErr != nil {
		tb.Fatal(mlpErr)
	}
	return mlpPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if mlpDir != "" {
		os.RemoveAll(mlpDir)
	}
	os.Exit(code)
}

func open(tb testing.TB, r backend.Runtime, path string, threads int) backend.Session {
	tb.Helper()
	s, err := r.Open(path, backend.Options{Threads: threads})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

func f32Tensor(name string, shape []int64, vals []float32) infergate.Tensor {
	data := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return infergate.Tensor{Name: name, DataType: infergate.FP32, Shape: shape, Data: data}
}

func f32s(t infergate.Tensor) []float32 {
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out
}

func randomBatch(seed uint64, n, width int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	v := make([]float32, n*width)
	for i := range v {
		v[i] = 2*rng.Float32() - 1
	}
	return v
}

func TestNewReusesEnvironment(t *testing.T) {
	r1 := newRuntime(t)
	r2 := newRuntime(t)
	if r1.Version() == "" || r1.Version() != r2.Version() {
		t.Fatalf("versions %q, %q", r1.Version(), r2.Version())
	}
	t.Logf("onnxruntime %s from %s", r1.Version(), r1.LibraryPath())
	if r1.Name() != "onnxruntime" {
		t.Errorf("Name() = %q", r1.Name())
	}
	// A relative path to the same file is the same library.
	wd, _ := os.Getwd()
	if rel, err := filepath.Rel(wd, r1.LibraryPath()); err == nil {
		if _, err := New(rel); err != nil {
			t.Errorf("New(%q): %v", rel, err)
		}
	}
	other := filepath.Join(t.TempDir(), "libother.so")
	if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(other); infergate.ErrorCode(err) != infergate.EConflict {
		t.Errorf("New(other library) = %v, want %s", err, infergate.EConflict)
	}
	if _, err := New(""); infergate.ErrorCode(err) != infergate.EInvalid {
		t.Errorf("New(\"\") = %v, want %s", err, infergate.EInvalid)
	}
}

func TestMLPSpecsAndRun(t *testing.T) {
	r := newRuntime(t)
	s := open(t, r, referenceModel(t), 2)
	in, out := s.Inputs(), s.Outputs()
	wantIn := infergate.TensorSpec{Name: "input", DataType: infergate.FP32, Shape: []int64{-1, 768}}
	wantOut := infergate.TensorSpec{Name: "logits", DataType: infergate.FP32, Shape: []int64{-1, 16}}
	if len(in) != 1 || in[0].Name != wantIn.Name || in[0].DataType != wantIn.DataType || !slices.Equal(in[0].Shape, wantIn.Shape) {
		t.Errorf("Inputs() = %+v, want [%+v]", in, wantIn)
	}
	if len(out) != 1 || out[0].Name != wantOut.Name || out[0].DataType != wantOut.DataType || !slices.Equal(out[0].Shape, wantOut.Shape) {
		t.Errorf("Outputs() = %+v, want [%+v]", out, wantOut)
	}
	// Specs are copies.
	in[0].Shape[0] = 99
	if s.Inputs()[0].Shape[0] != -1 {
		t.Error("Inputs() shares its shape slice")
	}

	x := f32Tensor("input", []int64{2, 768}, randomBatch(1, 2, 768))
	res, err := s.Run(context.Background(), []infergate.Tensor{x})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Name != "logits" || res[0].DataType != infergate.FP32 || !slices.Equal(res[0].Shape, []int64{2, 16}) || len(res[0].Data) != 2*16*4 {
		t.Fatalf("Run() = %+v", res)
	}
	// Outputs are fresh: a second run leaves the first result alone.
	first := append([]byte(nil), res[0].Data...)
	if _, err := s.Run(context.Background(), []infergate.Tensor{f32Tensor("input", []int64{2, 768}, randomBatch(2, 2, 768))}); err != nil {
		t.Fatal(err)
	}
	if string(first) != string(res[0].Data) {
		t.Error("an output changed after a later run")
	}

	// A misaligned input buffer gives the same result.
	buf := make([]byte, len(x.Data)+1)
	copy(buf[1:], x.Data)
	mis := x
	mis.Data = buf[1:]
	res2, err := s.Run(context.Background(), []infergate.Tensor{mis})
	if err != nil {
		t.Fatal(err)
	}
	if string(res2[0].Data) != string(first) {
		t.Error("misaligned input changed the result")
	}
}

func TestRunErrors(t *testing.T) {
	r := newRuntime(t)
	path := referenceModel(t)
	s := open(t, r, path, 1)
	ctx := context.Background()
	x := f32Tensor("input", []int64{1, 768}, randomBatch(3, 1, 768))

	if _, err := s.Run(ctx, nil); infergate.ErrorCode(err) != infergate.EInvalid {
		t.Errorf("no inputs: %v", err)
	}
	short := x
	short.Data = short.Data[:100]
	if _, err := s.Run(ctx, []infergate.Tensor{short}); infergate.ErrorCode(err) != infergate.EInvalid {
		t.Errorf("short data: %v", err)
	}
	wrongType := x
	wrongType.DataType = infergate.INT32
	if _, err := s.Run(ctx, []infergate.Tensor{wrongType}); infergate.ErrorCode(err) != infergate.EInvalid {
		t.Errorf("wrong type: %v", err)
	}
	// A shape ORT rejects surfaces as an internal error with ORT's message.
	bad := f32Tensor("input", []int64{1, 767}, randomBatch(3, 1, 767))
	if _, err := s.Run(ctx, []infergate.Tensor{bad}); infergate.ErrorCode(err) != infergate.EInternal {
		t.Errorf("wrong width: %v", err)
	} else {
		t.Logf("wrong width: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Run(canceled, []infergate.Tensor{x}); infergate.ErrorCode(err) != infergate.ECanceled {
		t.Errorf("canceled: %v", err)
	}
	// The session still works after all that.
	if _, err := s.Run(ctx, []infergate.Tensor{x}); err != nil {
		t.Fatal(err)
	}

	if _, err := r.Open(filepath.Join(t.TempDir(), "missing.onnx"), backend.Options{}); infergate.ErrorCode(err) != infergate.ENotFound {
		t.Errorf("missing model: %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.onnx")
	os.WriteFile(garbage, []byte("not a model"), 0o644)
	if _, err := r.Open(garbage, backend.Options{}); infergate.ErrorCode(err) != infergate.EInternal {
		t.Errorf("garbage model: %v", err)
	}
	if _, err := r.Open(path, backend.Options{Threads: -1}); infergate.ErrorCode(err) != infergate.EInvalid {
		t.Errorf("negative threads: %v", err)
	}

	s2, err := r.Open(path, backend.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s2.Run(ctx, []infergate.Tensor{x}); infergate.ErrorCode(err) != infergate.EUnavailable {
		t.Errorf("run after close: %v", err)
	}
}

// TestRunDeadline stops a long batch through the context and checks that the
// session is usable afterwards (the terminate flag is cleared).
func TestRunDeadline(t *testing.T) {
	r := newRuntime(t)
	s := open(t, r, referenceModel(t), 1)
	const n = 256
	x := f32Tensor("input", []int64{n, 768}, randomBatch(4, n, 768))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Run(ctx, []infergate.Tensor{x})
	took := time.Since(start)
	if err == nil {
		t.Skipf("batch of %d finished within the deadline (%v)", n, took)
	}
	if infergate.ErrorCode(err) != infergate.EDeadline {
		t.Fatalf("err = %v, want %s", err, infergate.EDeadline)
	}
	t.Logf("terminated after %v: %v", took, err)
	small := f32Tensor("input", []int64{1, 768}, randomBatch(5, 1, 768))
	if _, err := s.Run(context.Background(), []infergate.Tensor{small}); err != nil {
		t.Fatalf("run after a terminated run: %v", err)
	}
}

// ocrImages returns three deterministic 3x48x192 images in the classifier's
// normalised range [-1, 1]: a constant, a horizontal gradient and noise.
func ocrImages() [][]float32 {
	const c, h, w = 3, 48, 192
	imgs := make([][]float32, 3)
	for i := range imgs {
		imgs[i] = make([]float32, c*h*w)
	}
	rng := rand.New(rand.NewPCG(42, 7))
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				k := (ch*h+y)*w + x
				imgs[0][k] = 0.25
				imgs[1][k] = 2*float32(x)/float32(w-1) - 1
				imgs[2][k] = 2*rng.Float32() - 1
			}
		}
	}
	return imgs
}

func TestPaddleOCRClassifier(t *testing.T) {
	r := newRuntime(t)
	s := open(t, r, asset(t, assets.PaddleOCRCls), 2)
	ins, outs := s.Inputs(), s.Outputs()
	t.Logf("inputs %+v outputs %+v", ins, outs)
	if len(ins) != 1 || len(outs) != 1 || ins[0].DataType != infergate.FP32 || outs[0].DataType != infergate.FP32 || len(ins[0].Shape) != 4 {
		t.Fatalf("unexpected specs: inputs %+v outputs %+v", ins, outs)
	}
	if ins[0].Shape[0] != -1 {
		t.Errorf("batch dimension %d, want -1", ins[0].Shape[0])
	}
	name := ins[0].Name
	imgs := ocrImages()
	per := len(imgs[0])
	batch := make([]float32, 0, len(imgs)*per)
	for _, img := range imgs {
		batch = append(batch, img...)
	}
	res, err := s.Run(context.Background(), []infergate.Tensor{f32Tensor(name, []int64{3, 3, 48, 192}, batch)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || !slices.Equal(res[0].Shape, []int64{3, 2}) {
		t.Fatalf("output %+v, want shape [3 2]", res)
	}
	probs := f32s(res[0])
	for i := 0; i < 3; i++ {
		row := probs[2*i : 2*i+2]
		for _, p := range row {
			if math.IsNaN(float64(p)) || math.IsInf(float64(p), 0) || p < 0 || p > 1 {
				t.Errorf("row %d = %v: not a probability", i, row)
			}
		}
		if sum := row[0] + row[1]; math.Abs(float64(sum)-1) > 1e-4 {
			t.Errorf("row %d = %v sums to %v", i, row, sum)
		}
	}
	t.Logf("probabilities %v", probs)

	// Each image alone gives its row of the batch.
	for i, img := range imgs {
		one, err := s.Run(context.Background(), []infergate.Tensor{f32Tensor(name, []int64{1, 3, 48, 192}, img)})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(one[0].Shape, []int64{1, 2}) {
			t.Fatalf("single output shape %v", one[0].Shape)
		}
		got := f32s(one[0])
		for j := range got {
			if d := math.Abs(float64(got[j] - probs[2*i+j])); d > 1e-5 {
				t.Errorf("image %d: alone %v, in batch %v", i, got, probs[2*i:2*i+2])
				break
			}
		}
	}
}

// benchThreads is the intra-op thread count for BenchmarkORT:
// $INFERGATE_ORT_THREADS, default 2.
func benchThreads(b *testing.B) int {
	if v := os.Getenv("INFERGATE_ORT_THREADS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			b.Fatalf("INFERGATE_ORT_THREADS=%q", v)
		}
		return n
	}
	return 2
}

// BenchmarkORT measures throughput of the reference MLP in items per second.
// Threads: $INFERGATE_ORT_THREADS (default 2).
func BenchmarkORT(b *testing.B) {
	threads := benchThreads(b)
	b.Run("model=mlp", func(b *testing.B) {
		r := newRuntime(b)
		s := open(b, r, referenceModel(b), threads)
		for _, n := range []int{1, 32} {
			b.Run("batch="+strconv.Itoa(n), func(b *testing.B) {
				in := []infergate.Tensor{f32Tensor("input", []int64{int64(n), 768}, randomBatch(uint64(n), n, 768))}
				ctx := context.Background()
				if _, err := s.Run(ctx, in); err != nil { // warm up
					b.Fatal(err)
				}
				b.ResetTimer()
				for b.Loop() {
					if _, err := s.Run(ctx, in); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "items/s")
				b.ReportMetric(float64(threads), "threads")
			})
		}
	})
}
