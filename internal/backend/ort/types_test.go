//go:build cgo

package ort

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"slices"
	"testing"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/onnx"
)

// typesModel has inputs of several element types passed through simple ops.
// f16Shape is the shape of the FP16 output (Cast of "f"); "f" has the same.
func typesModel(t *testing.T, f16Shape []int64) string {
	t.Helper()
	dims := func(shape []int64) []string {
		p := make([]string, len(shape))
		for i, d := range shape {
			if d < 0 {
				p[i] = "N"
			}
		}
		return p
	}
	vi := func(name string, et onnx.ElemType, shape []int64) onnx.ValueInfo {
		return onnx.ValueInfo{Name: name, ElemType: et, HasShape: true, Shape: shape, DimParams: dims(shape)}
	}
	cast := func(in, out string, to onnx.ElemType) onnx.Node {
		return onnx.Node{Name: out, OpType: "Cast", Inputs: []string{in}, Outputs: []string{out},
			Attributes: []onnx.Attribute{{Name: "to", Type: onnx.AttrInt, I: int64(to)}}}
	}
	g := onnx.Graph{
		Name: "types",
		Nodes: []onnx.Node{
			cast("f", "half", onnx.Float16),
			cast("f", "double", onnx.Double),
			{Name: "not", OpType: "Not", Inputs: []string{"b"}, Outputs: []string{"not_b"}},
			{Name: "id64", OpType: "Identity", Inputs: []string{"i64"}, Outputs: []string{"i64_out"}},
			{Name: "id8", OpType: "Identity", Inputs: []string{"u8"}, Outputs: []string{"u8_out"}},
		},
		Inputs: []onnx.ValueInfo{
			vi("f", onnx.Float, f16Shape),
			vi("b", onnx.Bool, []int64{-1, 2}),
			vi("i64", onnx.Int64, []int64{-1, 2}),
			vi("u8", onnx.Uint8, []int64{-1, 3}),
		},
		Outputs: []onnx.ValueInfo{
			vi("half", onnx.Float16, f16Shape),
			vi("double", onnx.Double, f16Shape),
			vi("not_b", onnx.Bool, []int64{-1, 2}),
			vi("i64_out", onnx.Int64, []int64{-1, 2}),
			vi("u8_out", onnx.Uint8, []int64{-1, 3}),
		},
	}
	m := &onnx.Model{IRVersion: 8, ProducerName: "infergate-test", Opsets: []onnx.OpsetID{{Version: 17}}, Graph: g}
	path := filepath.Join(t.TempDir(), "types.onnx")
	if err := onnx.WriteFileAtomic(path, onnx.Encode(m)); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestElementTypes(t *testing.T) {
	r := newRuntime(t)
	s := open(t, r, typesModel(t, []int64{2, 2}), 1)
	wantOut := []infergate.DataType{infergate.FP16, infergate.FP64, infergate.BOOL, infergate.INT64, infergate.UINT8}
	outs := s.Outputs()
	for i, dt := range wantOut {
		if outs[i].DataType != dt {
			t.Errorf("output %d type %s, want %s", i, outs[i].DataType, dt)
		}
	}
	i64 := make([]byte, 32)
	for i, v := range []int64{1, -2, 1 << 40, -1 << 50} {
		binary.LittleEndian.PutUint64(i64[8*i:], uint64(v))
	}
	in := []infergate.Tensor{
		f32Tensor("f", []int64{2, 2}, []float32{1, 0.5, -2, 65504}),
		{Name: "b", DataType: infergate.BOOL, Shape: []int64{2, 2}, Data: []byte{1, 0, 0, 1}},
		{Name: "i64", DataType: infergate.INT64, Shape: []int64{2, 2}, Data: i64},
		{Name: "u8", DataType: infergate.UINT8, Shape: []int64{1, 3}, Data: []byte{7, 8, 255}},
	}
	res, err := s.Run(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	var half []uint16
	for i := 0; i < len(res[0].Data); i += 2 {
		half = append(half, binary.LittleEndian.Uint16(res[0].Data[i:]))
	}
	if want := []uint16{0x3c00, 0x3800, 0xc000, 0x7bff}; len(half) != 4 || half[0] != want[0] || half[1] != want[1] || half[2] != want[2] || half[3] != want[3] {
		t.Errorf("FP16 output %#04x, want %#04x", half, want)
	}
	if d := res[1].Data; len(d) != 32 || binary.LittleEndian.Uint64(d[16:]) != 0xc000000000000000 {
		t.Errorf("FP64 output % x", d)
	}
	if string(res[2].Data) != string([]byte{0, 1, 1, 0}) {
		t.Errorf("BOOL output %v", res[2].Data)
	}
	if string(res[3].Data) != string(i64) || res[3].DataType != infergate.INT64 {
		t.Errorf("INT64 output % x", res[3].Data)
	}
	if string(res[4].Data) != string([]byte{7, 8, 255}) || !slices.Equal(res[4].Shape, []int64{1, 3}) {
		t.Errorf("UINT8 output %v %v", res[4].Data, res[4].Shape)
	}

	// Zero-element batches pass through.
	empty := []infergate.Tensor{in[0], in[1], in[2], {Name: "u8", DataType: infergate.UINT8, Shape: []int64{0, 3}, Data: nil}}
	res, err = s.Run(context.Background(), empty)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res[4].Shape, []int64{0, 3}) || len(res[4].Data) != 0 {
		t.Errorf("empty UINT8 output %v %v", res[4].Shape, res[4].Data)
	}
}

// FP16 outputs of dynamic shape cannot be read correctly through
// onnxruntime_go v1.27.0, so such models are refused up front.
func TestDynamicFP16OutputRefused(t *testing.T) {
	r := newRuntime(t)
	_, err := r.Open(typesModel(t, []int64{-1, 2}), backend.Options{})
	if infergate.ErrorCode(err) != infergate.EUnprocess {
		t.Fatalf("err = %v, want %s", err, infergate.EUnprocess)
	}
	t.Log(err)
}
