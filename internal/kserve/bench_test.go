package kserve

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/infergate/infergate"
)

// embedding returns n float32 values like a model's activations.
func embedding(n int) []byte {
	r := rand.New(rand.NewPCG(7, 7))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return f32s(v...)
}

func BenchmarkDecode(b *testing.B) {
	for _, payload := range []string{"json", "binary"} {
		for _, elems := range []int{768, 16384} {
			req := &InferRequest{
				ID:     "bench-1",
				Inputs: []infergate.Tensor{{Name: "input", DataType: infergate.FP32, Shape: []int64{1, int64(elems)}, Data: embedding(elems)}},
			}
			body, hl := AppendInferRequest(nil, req, payload == "binary")
			if payload == "json" {
				hl = -1
			}
			b.Run(fmt.Sprintf("payload=%s/elems=%d", payload, elems), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					if _, err := DecodeInferRequest(body, hl, Limits{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkEncodeResponse(b *testing.B) {
	resp := &InferResponse{
		ModelName: "encoder", ModelVersion: "1", ID: "bench-1",
		Outputs: []infergate.Tensor{{Name: "output", DataType: infergate.FP32, Shape: []int64{1, 768}, Data: embedding(768)}},
	}
	for _, payload := range []string{"json", "binary"} {
		binFn := func(string) bool { return payload == "binary" }
		body, _ := AppendInferResponse(nil, resp, binFn)
		b.Run("payload="+payload, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			buf := make([]byte, 0, 2*len(body))
			for b.Loop() {
				buf, _ = AppendInferResponse(buf[:0], resp, binFn)
			}
		})
	}
}

func BenchmarkDecodeResponse(b *testing.B) {
	resp := &InferResponse{
		ModelName: "encoder", ID: "bench-1",
		Outputs: []infergate.Tensor{{Name: "output", DataType: infergate.FP32, Shape: []int64{1, 768}, Data: embedding(768)}},
	}
	body, _ := AppendInferResponse(nil, resp, nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeInferResponse(body, -1); err != nil {
			b.Fatal(err)
		}
	}
}
