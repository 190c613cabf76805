package gorun

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/onnx"
)

// ---- helpers ----

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bytesF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func tensor(name string, shape []int64, v []float32) infergate.Tensor {
	return infergate.Tensor{Name: name, DataType: infergate.FP32, Shape: shape, Data: f32bytes(v)}
}

func vi(name string, shape ...int64) onnx.ValueInfo {
	return onnx.ValueInfo{Name: name, ElemType: onnx.Float, HasShape: true, Shape: shape}
}

func attrI(name string, v int64) onnx.Attribute {
	return onnx.Attribute{Name: name, Type: onnx.AttrInt, I: v}
}

func attrF(name string, v float32) onnx.Attribute {
	return onnx.Attribute{Name: name, Type: onnx.AttrFloat, F: v}
}

// model builds a one-node model. consts are initializers.
func model(opType string, attrs []onnx.Attribute, nodeInputs []string, inputs []onnx.ValueInfo, consts []onnx.Tensor, out onnx.ValueInfo) *onnx.Model {
	return &onnx.Model{
		IRVersion: 8,
		Opsets:    []onnx.OpsetID{{Version: 17}},
		Graph: onnx.Graph{
			Nodes:        []onnx.Node{{Name: "n0", OpType: opType, Inputs: nodeInputs, Outputs: []string{out.Name}, Attributes: attrs}},
			Initializers: consts,
			Inputs:       inputs,
			Outputs:      []onnx.ValueInfo{out},
		},
	}
}

// openEncoded encodes m to a file and opens it, exercising the whole path.
func openEncoded(t testing.TB, m *onnx.Model, g GEMM, threads int) backend.Session {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(path, onnx.Encode(m), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := (&Runtime{GEMM: g}).Open(path, backend.Options{Threads: threads})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ---- op tests ----

func TestOps(t *testing.T) {
	cases := []struct {
		name   string
		model  *onnx.Model
		inputs []infergate.Tensor
		shape  []int64
		want   []float32
	}{
		{
			name: "MatMul const B",
			model: model("MatMul", nil, []string{"x", "w"}, []onnx.ValueInfo{vi("x", -1, 3)},
				[]onnx.Tensor{onnx.NewFloatTensor("w", []int64{3, 2}, []float32{1, 2, 3, 4, 5, 6})}, vi("y", -1, 2)),
			inputs: []infergate.Tensor{tensor("x", []int64{2, 3}, []float32{1, 0, -1, 2, 1, 0})},
			// [1 0 -1]·W = [1-5, 2-6]; [2 1 0]·W = [2+3, 4+4]
			shape: []int64{2, 2}, want: []float32{-4, -4, 5, 8},
		},
		{
			name: "MatMul dynamic B",
			model: model("MatMul", nil, []string{"x", "w"}, []onnx.ValueInfo{vi("x", 1, 2), vi("w", 2, 3)},
				nil, vi("y", 1, 3)),
			inputs: []infergate.Tensor{
				tensor("x", []int64{1, 2}, []float32{2, 3}),
				tensor("w", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}),
			},
			shape: []int64{1, 3}, want: []float32{14, 19, 24},
		},
		{
			name: "MatMul rank 3",
			model: model("MatMul", nil, []string{"x", "w"}, []onnx.ValueInfo{vi("x", 2, 1, 2)},
				[]onnx.Tensor{onnx.NewFloatTensor("w", []int64{2, 1}, []float32{10, 1})}, vi("y", 2, 1, 1)),
			inputs: []infergate.Tensor{tensor("x", []int64{2, 1, 2}, []float32{1, 2, 3, 4})},
			shape:  []int64{2, 1, 1}, want: []float32{12, 34},
		},
		{
			name: "Gemm transB bias",
			model: model("Gemm", []onnx.Attribute{attrI("transB", 1)}, []string{"x", "w", "b"}, []onnx.ValueInfo{vi("x", -1, 2)},
				[]onnx.Tensor{
					onnx.NewFloatTensor("w", []int64{3, 2}, []float32{1, 0, 0, 1, 1, 1}),
					onnx.NewFloatTensor("b", []int64{3}, []float32{0.5, -1, 0}),
				}, vi("y", -1, 3)),
			inputs: []infergate.Tensor{tensor("x", []int64{2, 2}, []float32{1, 2, 3, 4})},
			shape:  []int64{2, 3}, want: []float32{1.5, 1, 3, 3.5, 3, 7},
		},
		{
			name: "Gemm transA alpha beta full C",
			model: model("Gemm", []onnx.Attribute{attrI("transA", 1), attrF("alpha", 2), attrF("beta", 0.5)},
				[]string{"x", "w", "c"}, []onnx.ValueInfo{vi("x", 2, 1)},
				[]onnx.Tensor{
					onnx.NewFloatTensor("w", []int64{2, 2}, []float32{1, 2, 3, 4}),
					onnx.NewFloatTensor("c", []int64{1, 2}, []float32{10, 20}),
				}, vi("y", 1, 2)),
			// Aᵀ = [1 2]; Aᵀ·W = [7 10]; 2·[7 10] + 0.5·[10 20] = [19 30]
			inputs: []infergate.Tensor{tensor("x", []int64{2, 1}, []float32{1, 2})},
			shape:  []int64{1, 2}, want: []float32{19, 30},
		},
		{
			name: "Gemm C column",
			model: model("Gemm", nil, []string{"x", "w", "c"}, []onnx.ValueInfo{vi("x", 2, 2), vi("c", 2, 1)},
				[]onnx.Tensor{onnx.NewFloatTensor("w", []int64{2, 2}, []float32{1, 0, 0, 1})}, vi("y", 2, 2)),
			inputs: []infergate.Tensor{
				tensor("x", []int64{2, 2}, []float32{1, 2, 3, 4}),
				tensor("c", []int64{2, 1}, []float32{100, 200}),
			},
			shape: []int64{2, 2}, want: []float32{101, 102, 203, 204},
		},
		{
			name: "Gemm C scalar no bias input",
			model: model("Gemm", []onnx.Attribute{attrF("beta", 2)}, []string{"x", "w", "c"}, []onnx.ValueInfo{vi("x", 1, 2)},
				[]onnx.Tensor{
					onnx.NewFloatTensor("w", []int64{2, 2}, []float32{1, 2, 3, 4}),
					onnx.NewFloatTensor("c", nil, []float32{0.25}),
				}, vi("y", 1, 2)),
			inputs: []infergate.Tensor{tensor("x", []int64{1, 2}, []float32{1, 1})},
			shape:  []int64{1, 2}, want: []float32{4.5, 6.5},
		},
		{
			name: "Gemm without C",
			model: model("Gemm", nil, []string{"x", "w"}, []onnx.ValueInfo{vi("x", 1, 2)},
				[]onnx.Tensor{onnx.NewFloatTensor("w", []int64{2, 2}, []float32{1, 2, 3, 4})}, vi("y", 1, 2)),
			inputs: []infergate.Tensor{tensor("x", []int64{1, 2}, []float32{1, -1})},
			shape:  []int64{1, 2}, want: []float32{-2, -2},
		},
		{
			name:   "Add same shape",
			model:  model("Add", nil, []string{"a", "b"}, []onnx.ValueInfo{vi("a", -1, 2), vi("b", -1, 2)}, nil, vi("y", -1, 2)),
			inputs: []infergate.Tensor{tensor("a", []int64{2, 2}, []float32{1, 2, 3, 4}), tensor("b", []int64{2, 2}, []float32{10, 20, 30, 40})},
			shape:  []int64{2, 2}, want: []float32{11, 22, 33, 44},
		},
		{
			name: "Add row vector",
			model: model("Add", nil, []string{"a", "b"}, []onnx.ValueInfo{vi("a", -1, 3)},
				[]onnx.Tensor{onnx.NewFloatTensor("b", []int64{3}, []float32{1, 2, 3})}, vi("y", -1, 3)),
			inputs: []infergate.Tensor{tensor("a", []int64{2, 3}, []float32{0, 0, 0, 10, 10, 10})},
			shape:  []int64{2, 3}, want: []float32{1, 2, 3, 11, 12, 13},
		},
		{
			name:   "Add outer broadcast",
			model:  model("Add", nil, []string{"a", "b"}, []onnx.ValueInfo{vi("a", 2, 1), vi("b", 1, 3)}, nil, vi("y", 2, 3)),
			inputs: []infergate.Tensor{tensor("a", []int64{2, 1}, []float32{10, 20}), tensor("b", []int64{1, 3}, []float32{1, 2, 3})},
			shape:  []int64{2, 3}, want: []float32{11, 12, 13, 21, 22, 23},
		},
		{
			name:   "Sub row first",
			model:  model("Sub", nil, []string{"a", "b"}, []onnx.ValueInfo{vi("a", 2), vi("b", 2, 2)}, nil, vi("y", 2, 2)),
			inputs: []infergate.Tensor{tensor("a", []int64{2}, []float32{10, 20}), tensor("b", []int64{2, 2}, []float32{1, 2, 3, 4})},
			shape:  []int64{2, 2}, want: []float32{9, 18, 7, 16},
		},
		{
			name: "Mul scalar",
			model: model("Mul", nil, []string{"a", "b"}, []onnx.ValueInfo{vi("a", 3)},
				[]onnx.Tensor{onnx.NewFloatTensor("b", nil, []float32{-2})}, vi("y", 3)),
			inputs: []infergate.Tensor{tensor("a", []int64{3}, []float32{1, 2, 3})},
			shape:  []int64{3}, want: []float32{-2, -4, -6},
		},
		{
			name:   "Div rank 3 middle broadcast",
			model:  model("Div", nil, []string{"a", "b"}, []onnx.ValueInfo{vi("a", 2, 2, 2), vi("b", 2, 1, 2)}, nil, vi("y", 2, 2, 2)),
			inputs: []infergate.Tensor{tensor("a", []int64{2, 2, 2}, []float32{2, 4, 6, 8, 10, 12, 14, 16}), tensor("b", []int64{2, 1, 2}, []float32{2, 4, 10, 1})},
			shape:  []int64{2, 2, 2}, want: []float32{1, 1, 3, 2, 1, 12, 1.4, 16},
		},
		{
			name:   "Relu",
			model:  model("Relu", nil, []string{"x"}, []onnx.ValueInfo{vi("x", 4)}, nil, vi("y", 4)),
			inputs: []infergate.Tensor{tensor("x", []int64{4}, []float32{-1, 0, 2, -0.5})},
			shape:  []int64{4}, want: []float32{0, 0, 2, 0},
		},
		{
			name:   "Sigmoid",
			model:  model("Sigmoid", nil, []string{"x"}, []onnx.ValueInfo{vi("x", 3)}, nil, vi("y", 3)),
			inputs: []infergate.Tensor{tensor("x", []int64{3}, []float32{0, float32(math.Log(3)), -1000})},
			shape:  []int64{3}, want: []float32{0.5, 0.75, 0},
		},
		{
			name:   "Softmax",
			model:  model("Softmax", nil, []string{"x"}, []onnx.ValueInfo{vi("x", 2, 2)}, nil, vi("y", 2, 2)),
			inputs: []infergate.Tensor{tensor("x", []int64{2, 2}, []float32{0, float32(math.Log(3)), 1000, 1000})},
			shape:  []int64{2, 2}, want: []float32{0.25, 0.75, 0.5, 0.5},
		},
		{
			name:   "Softmax explicit axis",
			model:  model("Softmax", []onnx.Attribute{attrI("axis", 1)}, []string{"x"}, []onnx.ValueInfo{vi("x", 1, 3)}, nil, vi("y", 1, 3)),
			inputs: []infergate.Tensor{tensor("x", []int64{1, 3}, []float32{5, 5, 5})},
			shape:  []int64{1, 3}, want: []float32{1.0 / 3, 1.0 / 3, 1.0 / 3},
		},
		{
			name:   "Flatten",
			model:  model("Flatten", nil, []string{"x"}, []onnx.ValueInfo{vi("x", -1, 2, 2)}, nil, vi("y", -1, 4)),
			inputs: []infergate.Tensor{tensor("x", []int64{2, 2, 2}, []float32{1, 2, 3, 4, 5, 6, 7, 8})},
			shape:  []int64{2, 4}, want: []float32{1, 2, 3, 4, 5, 6, 7, 8},
		},
		{
			name:   "Flatten axis 0",
			model:  model("Flatten", []onnx.Attribute{attrI("axis", 0)}, []string{"x"}, []onnx.ValueInfo{vi("x", 2, 2)}, nil, vi("y", 1, 4)),
			inputs: []infergate.Tensor{tensor("x", []int64{2, 2}, []float32{1, 2, 3, 4})},
			shape:  []int64{1, 4}, want: []float32{1, 2, 3, 4},
		},
		{
			name:   "Identity",
			model:  model("Identity", nil, []string{"x"}, []onnx.ValueInfo{vi("x", 2)}, nil, vi("y", 2)),
			inputs: []infergate.Tensor{tensor("x", []int64{2}, []float32{3, -3})},
			shape:  []int64{2}, want: []float32{3, -3},
		},
	}
	for _, impl := range gemms {
		for _, c := range cases {
			t.Run(impl.name+"/"+c.name, func(t *testing.T) {
				s := openEncoded(t, c.model, impl.g, 2)
				out, err := s.Run(context.Background(), c.inputs)
				if err != nil {
					t.Fatal(err)
				}
				if len(out) != 1 || out[0].Name != "y" || out[0].DataType != infergate.FP32 {
					t.Fatalf("outputs %+v", out)
				}
				if !reflect.DeepEqual(out[0].Shape, c.shape) {
					t.Fatalf("shape %v, want %v", out[0].Shape, c.shape)
				}
				got := bytesF32(out[0].Data)
				for i := range c.want {
					if math.Abs(float64(got[i]-c.want[i])) > 1e-6 {
						t.Fatalf("got %v, want %v", got, c.want)
					}
				}
			})
		}
	}
}

// TestChain checks buffer reuse across a longer graph with a value read by
// two later nodes: y = relu(x·W) + sigmoid(x·W).
func TestChain(t *testing.T) {
	m := &onnx.Model{
		IRVersion: 8, Opsets: []onnx.OpsetID{{Version: 17}},
		Graph: onnx.Graph{
			Nodes: []onnx.Node{
				{OpType: "MatMul", Inputs: []string{"x", "w"}, Outputs: []string{"h"}},
				{OpType: "Relu", Inputs: []string{"h"}, Outputs: []string{"r"}},
				{OpType: "Sigmoid", Inputs: []string{"h"}, Outputs: []string{"s"}},
				{OpType: "Add", Inputs: []string{"r", "s"}, Outputs: []string{"y"}},
				{OpType: "Identity", Inputs: []string{"y"}, Outputs: []string{"z"}},
			},
			Initializers: []onnx.Tensor{onnx.NewFloatTensor("w", []int64{1, 2}, []float32{1, -1})},
			Inputs:       []onnx.ValueInfo{vi("x", -1, 1)},
			Outputs:      []onnx.ValueInfo{vi("z", -1, 2), vi("h", -1, 2)},
		},
	}
	s := openEncoded(t, m, Tiled{}, 1)
	if got := s.Outputs(); len(got) != 2 || got[0].Name != "z" || got[1].Name != "h" {
		t.Fatalf("outputs %+v", got)
	}
	for _, n := range []int64{3, 1, 4} { // shrink and grow the buffers
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i) - 1
		}
		out, err := s.Run(context.Background(), []infergate.Tensor{tensor("x", []int64{n, 1}, x)})
		if err != nil {
			t.Fatal(err)
		}
		z, h := bytesF32(out[0].Data), bytesF32(out[1].Data)
		for i, v := range x {
			for j, w := range []float32{1, -1} {
				hv := v * w
				want := float32(math.Max(float64(hv), 0) + 1/(1+math.Exp(-float64(hv))))
				if math.Abs(float64(z[2*i+j]-want)) > 1e-6 || h[2*i+j] != hv {
					t.Fatalf("n=%d item %d: z %v h %v", n, i, z, h)
				}
			}
		}
		if !reflect.DeepEqual(out[0].Shape, []int64{n, 2}) {
			t.Fatalf("shape %v", out[0].Shape)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ok := func() *onnx.Model {
		return model("Relu", nil, []string{"x"}, []onnx.ValueInfo{vi("x", -1, 2)}, nil, vi("y", -1, 2))
	}
	cases := []struct {
		name  string
		model func() *onnx.Model
		want  string
	}{
		{"unsupported op", func() *onnx.Model {
			return model("Conv", nil, []string{"x"}, []onnx.ValueInfo{vi("x", -1, 2)}, nil, vi("y", -1, 2))
		}, "Conv"},
		{"int64 input", func() *onnx.Model {
			m := ok()
			m.Graph.Inputs[0].ElemType = onnx.Int64
			return m
		}, "FP32"},
		{"int64 output", func() *onnx.Model {
			m := ok()
			m.Graph.Outputs[0].ElemType = onnx.Int64
			return m
		}, "FP32"},
		{"non-float initializer", func() *onnx.Model {
			return model("Add", nil, []string{"x", "c"}, []onnx.ValueInfo{vi("x", 2)},
				[]onnx.Tensor{{Name: "c", ElemType: onnx.Int64, Dims: []int64{2}, Int64Data: []int64{1, 2}}}, vi("y", 2))
		}, "FP32"},
		{"undefined input", func() *onnx.Model {
			return model("Relu", nil, []string{"nope"}, []onnx.ValueInfo{vi("x", 2)}, nil, vi("y", 2))
		}, "nope"},
		{"missing output", func() *onnx.Model {
			m := ok()
			m.Graph.Outputs[0].Name = "other"
			return m
		}, "other"},
		{"output shape", func() *onnx.Model {
			m := ok()
			m.Graph.Outputs[0].Shape = []int64{-1, 3}
			return m
		}, "shape"},
		{"gemm mismatch", func() *onnx.Model {
			return model("Gemm", []onnx.Attribute{attrI("transB", 1)}, []string{"x", "w"}, []onnx.ValueInfo{vi("x", -1, 3)},
				[]onnx.Tensor{onnx.NewFloatTensor("w", []int64{2, 2}, make([]float32, 4))}, vi("y", -1, 2))
		}, "match"},
		{"softmax axis", func() *onnx.Model {
			return model("Softmax", []onnx.Attribute{attrI("axis", 0)}, []string{"x"}, []onnx.ValueInfo{vi("x", 2, 2)}, nil, vi("y", 2, 2))
		}, "axis"},
		{"arity", func() *onnx.Model {
			return model("Relu", nil, []string{"x", "x"}, []onnx.ValueInfo{vi("x", 2)}, nil, vi("y", 2))
		}, "inputs"},
		{"attribute type", func() *onnx.Model {
			return model("Gemm", []onnx.Attribute{attrF("transB", 1)}, []string{"x", "x"}, []onnx.ValueInfo{vi("x", 2, 2)}, nil, vi("y", 2, 2))
		}, "INT"},
		{"custom domain", func() *onnx.Model {
			m := ok()
			m.Graph.Nodes[0].Domain = "com.microsoft"
			return m
		}, "domain"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New().OpenModel(c.model(), backend.Options{})
			if err == nil {
				t.Fatal("OpenModel succeeded")
			}
			if code := infergate.ErrorCode(err); code != infergate.EUnprocess {
				t.Errorf("code %s", code)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
	if _, err := New().Open(filepath.Join(t.TempDir(), "missing.onnx"), backend.Options{}); infergate.ErrorCode(err) != infergate.ENotFound {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.onnx")
	os.WriteFile(bad, []byte("not a model"), 0o644)
	if _, err := New().Open(bad, backend.Options{}); infergate.ErrorCode(err) != infergate.EInvalid {
		t.Errorf("garbage file: %v", err)
	}
}

func TestRunErrors(t *testing.T) {
	m := model("Relu", nil, []string{"x"}, []onnx.ValueInfo{vi("x", -1, 2)}, nil, vi("y", -1, 2))
	s := openEncoded(t, m, Tiled{}, 1)
	good := tensor("x", []int64{1, 2}, []float32{1, 2})
	for name, in := range map[string][]infergate.Tensor{
		"count":    {good, good},
		"dtype":    {{Name: "x", DataType: infergate.INT32, Shape: []int64{1, 2}, Data: make([]byte, 8)}},
		"rank":     {tensor("x", []int64{2}, []float32{1, 2})},
		"dim":      {tensor("x", []int64{1, 1}, []float32{1})},
		"bytes":    {{Name: "x", DataType: infergate.FP32, Shape: []int64{1, 2}, Data: make([]byte, 7)}},
		"negative": {{Name: "x", DataType: infergate.FP32, Shape: []int64{-1, 2}, Data: nil}},
	} {
		if _, err := s.Run(context.Background(), in); infergate.ErrorCode(err) != infergate.EInvalid {
			t.Errorf("%s: %v", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Run(ctx, []infergate.Tensor{good}); infergate.ErrorCode(err) != infergate.ECanceled {
		t.Errorf("canceled: %v", err)
	}
	s.Close()
	if _, err := s.Run(context.Background(), []infergate.Tensor{good}); infergate.ErrorCode(err) != infergate.EUnavailable {
		t.Errorf("closed: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestMisalignedInput checks the copy path for input bytes that cannot be
// viewed as []float32 in place.
func TestMisalignedInput(t *testing.T) {
	m := model("Relu", nil, []string{"x"}, []onnx.ValueInfo{vi("x", -1, 2)}, nil, vi("y", -1, 2))
	s := openEncoded(t, m, Tiled{}, 1)
	buf := make([]byte, 9)
	copy(buf[1:], f32bytes([]float32{-1, 5}))
	out, err := s.Run(context.Background(), []infergate.Tensor{{Name: "x", DataType: infergate.FP32, Shape: []int64{1, 2}, Data: buf[1:]}})
	if err != nil {
		t.Fatal(err)
	}
	if got := bytesF32(out[0].Data); !reflect.DeepEqual(got, []float32{0, 5}) {
		t.Fatalf("got %v", got)
	}
}

// ---- reference MLP ----

func referencePath(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "mlp.onnx")
	if err := onnx.WriteReferenceModel(path); err != nil {
		tb.Fatal(err)
	}
	return path
}

func randomInput(seed uint64, n int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n*768)
	for i := range x {
		x[i] = 2*rng.Float32() - 1
	}
	return x
}

// mlp64 evaluates the reference model in float64 straight from its
// initializers.
func mlp64(t *testing.T, m *onnx.Model, x []float32) []float64 {
	h := make([]float64, len(x))
	for i, v := range x {
		h[i] = float64(v)
	}
	for l := 0; l < 5; l++ {
		w, err := m.Graph.Initializers[2*l].Float32s()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := m.Graph.Initializers[2*l+1].Float32s()
		out, in := len(b), len(h)
		next := make([]float64, out)
		for j := range next {
			s := float64(b[j])
			for p := 0; p < in; p++ {
				s += float64(w[j*in+p]) * h[p]
			}
			if l < 4 && s < 0 {
				s = 0
			}
			next[j] = s
		}
		h = next
	}
	return h
}

func TestReferenceMLP(t *testing.T) {
	path := referencePath(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 5
	x := randomInput(1, batch)
	results := map[string][]float32{}
	for _, impl := range gemms {
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/threads=%d", impl.name, threads), func(t *testing.T) {
				s, err := (&Runtime{GEMM: impl.g}).Open(path, backend.Options{Threads: threads})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				wantIn := []infergate.TensorSpec{{Name: "input", DataType: infergate.FP32, Shape: []int64{-1, 768}}}
				wantOut := []infergate.TensorSpec{{Name: "logits", DataType: infergate.FP32, Shape: []int64{-1, 16}}}
				if !reflect.DeepEqual(s.Inputs(), wantIn) || !reflect.DeepEqual(s.Outputs(), wantOut) {
					t.Fatalf("specs %+v %+v", s.Inputs(), s.Outputs())
				}
				out, err := s.Run(context.Background(), []infergate.Tensor{tensor("input", []int64{batch, 768}, x)})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(out[0].Shape, []int64{batch, 16}) {
					t.Fatalf("shape %v", out[0].Shape)
				}
				all := bytesF32(out[0].Data)
				results[t.Name()] = all
				// Batching invariance: each item alone gives the same logits.
				for i := 0; i < batch; i++ {
					one, err := s.Run(context.Background(), []infergate.Tensor{tensor("input", []int64{1, 768}, x[i*768:(i+1)*768])})
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(one[0].Shape, []int64{1, 16}) {
						t.Fatalf("shape %v", one[0].Shape)
					}
					got := bytesF32(one[0].Data)
					for j := range got {
						if d := math.Abs(float64(got[j] - all[i*16+j])); d > 1e-5 {
							t.Fatalf("item %d logit %d: %v alone, %v in a batch", i, j, got[j], all[i*16+j])
						}
					}
				}
				// Against a float64 evaluation.
				for i := 0; i < batch; i++ {
					want := mlp64(t, m, x[i*768:(i+1)*768])
					for j, w := range want {
						if d := math.Abs(float64(all[i*16+j]) - w); d > 1e-4*(1+math.Abs(w)) {
							t.Fatalf("item %d logit %d = %v, float64 gives %v", i, j, all[i*16+j], w)
						}
					}
				}
			})
		}
	}
}

// TestSteadyStateAllocs checks that a warmed-up Run allocates only its
// outputs: the slice, and each output's shape and data.
func TestSteadyStateAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	m := onnx.ReferenceMLP(3)
	for _, impl := range gemms {
		s := openEncoded(t, m, impl.g, 2)
		in := []infergate.Tensor{tensor("input", []int64{4, 768}, randomInput(2, 4))}
		ctx := context.Background()
		if _, err := s.Run(ctx, in); err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(5, func() {
			if _, err := s.Run(ctx, in); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 3 {
			t.Errorf("%s: Run allocates %v times, want at most 3", impl.name, allocs)
		}
	}
}

func BenchmarkReferenceMLP(b *testing.B) {
	path := referencePath(b)
	for _, batch := range []int{1, 32} {
		for _, impl := range gemms {
			b.Run(fmt.Sprintf("batch=%d/gemm=%s", batch, impl.name), func(b *testing.B) {
				s, err := (&Runtime{GEMM: impl.g}).Open(path, backend.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				in := []infergate.Tensor{tensor("input", []int64{int64(batch), 768}, randomInput(3, batch))}
				ctx := context.Background()
				for b.Loop() {
					if _, err := s.Run(ctx, in); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(batch)*float64(b.N)/b.Elapsed().Seconds(), "items/s")
			})
		}
	}
}
