package onnx

import "testing"

func FuzzDecode(f *testing.F) {
	small := Encode(smallModel())
	f.Add(small)
	f.Add(small[:len(small)/2])
	f.Add(small[:len(small)-1])
	f.Add([]byte{})
	tiny := Encode(&Model{IRVersion: 8, Opsets: []OpsetID{{Version: 17}}, Graph: Graph{
		Nodes:        []Node{{OpType: "Relu", Inputs: []string{"x"}, Outputs: []string{"y"}}},
		Initializers: []Tensor{NewFloatTensor("w", []int64{2}, []float32{1, 2})},
		Inputs:       []ValueInfo{{Name: "x", ElemType: Float, HasShape: true, Shape: []int64{-1, 2}, DimParams: []string{"N", ""}}},
		Outputs:      []ValueInfo{{Name: "y", ElemType: Float, HasShape: true, Shape: []int64{-1, 2}, DimParams: []string{"N", ""}}},
	}})
	f.Add(tiny)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		// A model that decodes must re-encode and decode again.
		if _, err := Decode(Encode(m)); err != nil {
			t.Fatalf("re-decoding an encoded model failed: %v", err)
		}
		for i := range m.Graph.Initializers {
			m.Graph.Initializers[i].Float32s()
		}
	})
}
