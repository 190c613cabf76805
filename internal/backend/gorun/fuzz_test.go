package gorun

import (
	"context"
	"testing"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/onnx"
)

// FuzzOpen feeds arbitrary model bytes through Decode, planning and one Run:
// none of them may panic.
func FuzzOpen(f *testing.F) {
	f.Add(onnx.Encode(model("Gemm", []onnx.Attribute{attrI("transB", 1)}, []string{"x", "w", "b"}, []onnx.ValueInfo{vi("x", -1, 2)},
		[]onnx.Tensor{
			onnx.NewFloatTensor("w", []int64{3, 2}, []float32{1, 0, 0, 1, 1, 1}),
			onnx.NewFloatTensor("b", []int64{3}, []float32{0.5, -1, 0}),
		}, vi("y", -1, 3))))
	f.Add(onnx.Encode(model("Add", nil, []string{"a", "b"}, []onnx.ValueInfo{vi("a", 2, 1), vi("b", 1, 3)}, nil, vi("y", 2, 3))))
	f.Add(onnx.Encode(model("Softmax", nil, []string{"x"}, []onnx.ValueInfo{vi("x", -1, 4)}, nil, vi("y", -1, 4))))
	f.Add(onnx.Encode(model("Flatten", nil, []string{"x"}, []onnx.ValueInfo{vi("x", -1, 2, 2)}, nil, vi("y", -1, 4))))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := onnx.Decode(data)
		if err != nil {
			return
		}
		s, err := (&Runtime{GEMM: Tiled{}}).OpenModel(m, backend.Options{Threads: 1})
		if err != nil {
			return
		}
		defer s.Close()
		var ins []infergate.Tensor
		for _, spec := range s.Inputs() {
			shape := make([]int64, len(spec.Shape))
			for i, d := range spec.Shape {
				if d < 0 {
					d = 2
				}
				shape[i] = d
			}
			n := infergate.NumElements(shape)
			if n < 0 || n > 1<<16 {
				return
			}
			ins = append(ins, infergate.Tensor{Name: spec.Name, DataType: infergate.FP32, Shape: shape, Data: make([]byte, 4*n)})
		}
		s.Run(context.Background(), ins)
	})
}
