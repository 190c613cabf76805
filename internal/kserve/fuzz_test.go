package kserve

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"reflect"
	"testing"

	"github.com/infergate/infergate"
)

func requestSeeds() [][]byte {
	seeds := [][]byte{
		[]byte(`{"id":"a","parameters":{"priority":1,"binary_data_output":true},"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2.5,-3e-2]}],"outputs":[{"name":"y","parameters":{"binary_data":false}}]}`),
		[]byte(`{"inputs":[{"data":[[1,2],[3,4]],"datatype":"INT64","shape":[2,2],"name":"ids"},{"name":"m","shape":[2],"datatype":"BOOL","data":[true,0]}]}`),
		[]byte(`{"inputs":[{"name":"h","shape":[3],"datatype":"FP16","data":[1,-2.5e-7,null]},{"name":"u","shape":[1],"datatype":"UINT8","data":[255]}]}`),
		[]byte(`{"inputs":[{"name":"x","shape":[1000000000000],"datatype":"FP32","data":[1]}]}`),
		[]byte(`{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1.5,2]}]}`),
		[]byte(`{"inputs":[{"name":"x","shape":[],"datatype":"FP64","data":[1e308]}]}`),
	}
	req := &InferRequest{ID: "b", Inputs: sampleTensors(), Outputs: []RequestedOutput{{Name: "o", Binary: true}}}
	body, _ := AppendInferRequest(nil, req, false)
	seeds = append(seeds, body)
	return seeds
}

// sameAfterJSON compares raw tensor data, treating JSON's limits as equal: any
// NaN or ±Inf in want may come back as any NaN.
func sameAfterJSON(dt infergate.DataType, got, want []byte) bool {
	if len(got) != len(want) {
		return false
	}
	le := binary.LittleEndian
	switch dt {
	case infergate.FP32:
		for i := 0; i < len(want); i += 4 {
			w, g := math.Float32frombits(le.Uint32(want[i:])), math.Float32frombits(le.Uint32(got[i:]))
			if isNonFinite(float64(w)) {
				if !math.IsNaN(float64(g)) {
					return false
				}
			} else if math.Float32bits(w) != math.Float32bits(g) {
				return false
			}
		}
		return true
	case infergate.FP64:
		for i := 0; i < len(want); i += 8 {
			w, g := math.Float64frombits(le.Uint64(want[i:])), math.Float64frombits(le.Uint64(got[i:]))
			if isNonFinite(w) {
				if !math.IsNaN(g) {
					return false
				}
			} else if math.Float64bits(w) != math.Float64bits(g) {
				return false
			}
		}
		return true
	case infergate.FP16:
		for i := 0; i < len(want); i += 2 {
			w, g := le.Uint16(want[i:]), le.Uint16(got[i:])
			if w&0x7c00 == 0x7c00 {
				if g&0x7c00 != 0x7c00 || g&0x3ff == 0 {
					return false
				}
			} else if w != g {
				return false
			}
		}
		return true
	}
	return bytes.Equal(got, want)
}

func isNonFinite(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }

func compareTensors(t *testing.T, what string, got, want []infergate.Tensor, viaJSON bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d tensors, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := &got[i], &want[i]
		same := bytes.Equal(g.Data, w.Data)
		if viaJSON {
			same = sameAfterJSON(w.DataType, g.Data, w.Data)
		}
		if g.Name != w.Name || g.DataType != w.DataType || !reflect.DeepEqual(g.Shape, w.Shape) || !same {
			t.Fatalf("%s: tensor %d:\n got %+v\nwant %+v", what, i, *g, *w)
		}
	}
}

func FuzzDecodeInferRequest(f *testing.F) {
	for _, s := range requestSeeds() {
		f.Add(s, -1)
	}
	header := []byte(`{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"b","shape":[1],"datatype":"INT8","data":[5]}]}`)
	f.Add(append(append([]byte{}, header...), f32s(1, 2)...), len(header))
	req := &InferRequest{Inputs: sampleTensors(), BinaryOutput: true}
	body, hl := AppendInferRequest(nil, req, true)
	f.Add(body, hl)
	f.Add(body, hl+3)

	lim := Limits{MaxElements: 1 << 16, MaxDims: 6, MaxInputs: 16}
	f.Fuzz(func(t *testing.T, body []byte, headerLen int) {
		if headerLen < -1 {
			headerLen = -1
		}
		req, err := DecodeInferRequest(body, headerLen, lim)
		if err != nil {
			if _, ok := err.(*infergate.Error); !ok {
				t.Fatalf("error is %T, not *infergate.Error: %v", err, err)
			}
			return
		}
		for _, bin := range []bool{true, false} {
			enc, hl := AppendInferRequest(nil, req, bin)
			got, err := DecodeInferRequest(enc, hl, lim)
			if err != nil {
				t.Fatalf("re-decode (binary=%v) of %q: %v", bin, enc, err)
			}
			compareTensors(t, "request", got.Inputs, req.Inputs, !bin)
			if got.ID != req.ID || got.BinaryOutput != req.BinaryOutput || !reflect.DeepEqual(got.Outputs, req.Outputs) {
				t.Fatalf("re-decode: got %+v, want %+v", got, req)
			}
		}
	})
}

func FuzzDecodeInferResponse(f *testing.F) {
	f.Add([]byte(`{"model_name":"m","model_version":"1","id":"r","outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"data":[0.5,null]}]}`), -1)
	f.Add([]byte(`{"error":"boom"}`), -1)
	f.Add([]byte(`{"model_name":"m","outputs":[{"name":"y","datatype":"FP16","shape":[2],"data":[[1],[2]]}],"parameters":{"a":[1,{}]}}`), -1)
	resp := &InferResponse{ModelName: "m", ID: "x", Outputs: sampleTensors()}
	for _, mode := range []func(string) bool{nil, func(string) bool { return true }, func(n string) bool { return len(n) == 3 }} {
		body, hl := AppendInferResponse(nil, resp, mode)
		f.Add(body, hl)
	}
	f.Fuzz(func(t *testing.T, body []byte, headerLen int) {
		if headerLen < -1 {
			headerLen = -1
		}
		resp, err := DecodeInferResponse(body, headerLen)
		if err != nil {
			if _, ok := err.(*infergate.Error); !ok {
				t.Fatalf("error is %T, not *infergate.Error: %v", err, err)
			}
			return
		}
		for _, bin := range []bool{true, false} {
			enc, hl := AppendInferResponse(nil, resp, func(string) bool { return bin })
			got, err := DecodeInferResponse(enc, hl)
			if err != nil {
				t.Fatalf("re-decode (binary=%v) of %q: %v", bin, enc, err)
			}
			compareTensors(t, "response", got.Outputs, resp.Outputs, !bin)
			if got.ModelName != resp.ModelName || got.ModelVersion != resp.ModelVersion || got.ID != resp.ID ||
				!reflect.DeepEqual(got.Parameters, resp.Parameters) && len(resp.Parameters)+len(got.Parameters) > 0 {
				t.Fatalf("re-decode: got %+v, want %+v", got, resp)
			}
		}
	})
}

// FuzzObjectMembers checks the object splitter against encoding/json: what
// it accepts is one valid JSON object whose members it reports in order
// with valid values, and it never panics.
func FuzzObjectMembers(f *testing.F) {
	for _, s := range []string{
		`{"custom_id":"a","method":"POST","url":"/v2/models/m/infer","body":{"inputs":[]}}`,
		`{}`, ` { "a" : [1, {"b": null}] , "a": "x\u00e9" } `, `{"a":1}x`, `[1]`, `{"a"}`, `{"\ud800":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		err := ObjectMembers(b, func(key, value []byte) error {
			n++
			if !json.Valid(value) {
				t.Fatalf("member %q: invalid value %q", key, value)
			}
			return nil
		})
		if err != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(b, &obj) != nil {
			t.Fatalf("accepted a non-object %q", b)
		}
		if len(obj) > n {
			t.Fatalf("reported %d members, encoding/json sees %d keys", n, len(obj))
		}
	})
}
