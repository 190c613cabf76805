package httpapi

import (
	"bytes"
	"testing"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/kserve"
)

// FuzzDecodeItemBody checks the stored item body decoder: no panic on any
// input, and a JSON request stored in binary form decodes to the same
// tensors as the JSON itself.
func FuzzDecodeItemBody(f *testing.F) {
	for _, s := range []string{
		`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`,
		`{"id":"x","inputs":[{"name":"a","shape":[2],"datatype":"INT64","data":[1,2]}],"outputs":[{"name":"o"}]}`,
		"\x00", "\x00\x05{}", "\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = decodeItemBody(body, kserve.Limits{MaxElements: 1 << 16})
		if len(body) == 0 || body[0] == storedBinary {
			return
		}
		req, err := kserve.DecodeInferRequest(body, -1, kserve.Limits{MaxElements: 1 << 16})
		if err != nil {
			return
		}
		back, err := decodeItemBody(encodeItemBody(req), kserve.Limits{MaxElements: 1 << 16})
		if err != nil {
			t.Fatalf("stored form of a valid request does not decode: %v", err)
		}
		if back.ID != req.ID || len(back.Inputs) != len(req.Inputs) || len(back.Outputs) != len(req.Outputs) {
			t.Fatalf("round trip changed the request: %+v -> %+v", req, back)
		}
		for i := range req.Inputs {
			a, b := req.Inputs[i], back.Inputs[i]
			if a.Name != b.Name || a.DataType != b.DataType || !equalShape(a.Shape, b.Shape) || !bytes.Equal(a.Data, b.Data) {
				t.Fatalf("input %d: %v -> %v", i, describe(a), describe(b))
			}
		}
	})
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func describe(t infergate.Tensor) string {
	return t.Name + " " + string(t.DataType)
}
