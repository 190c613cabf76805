package kserve

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/infergate/infergate"
)

// Raw little-endian builders.

func f32s(v ...float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, f := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}

func f64s(v ...float64) []byte {
	b := make([]byte, 0, 8*len(v))
	for _, f := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
	}
	return b
}

func i64s(v ...int64) []byte {
	b := make([]byte, 0, 8*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, uint64(x))
	}
	return b
}

func i32s(v ...int32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func u16s(v ...uint16) []byte {
	b := make([]byte, 0, 2*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return b
}

func code(err error) string {
	var e *infergate.Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return ""
	}
	return "not *infergate.Error: " + err.Error()
}

func TestDecodeGood(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []infergate.Tensor
		id   string
	}{
		{
			name: "flat fp32",
			body: `{"id":"r1","inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2.5,-3e-2]}]}`,
			id:   "r1",
			want: []infergate.Tensor{{Name: "x", DataType: infergate.FP32, Shape: []int64{1, 3}, Data: f32s(1, 2.5, -0.03)}},
		},
		{
			name: "nested fp32, data before shape, whitespace",
			body: " {\n\t\"inputs\" : [ { \"data\" : [ [ 1 , 2 ] , [ 3 , 4 ] ] , \"datatype\" : \"FP32\" , \"shape\" : [ 2 , 2 ] , \"name\" : \"x\" } ] } \n",
			want: []infergate.Tensor{{Name: "x", DataType: infergate.FP32, Shape: []int64{2, 2}, Data: f32s(1, 2, 3, 4)}},
		},
		{
			name: "int64 with integral forms",
			body: `{"inputs":[{"name":"ids","shape":[5],"datatype":"INT64","data":[1,-9223372036854775808,9223372036854775807,3.0,2e3]}]}`,
			want: []infergate.Tensor{{Name: "ids", DataType: infergate.INT64, Shape: []int64{5}, Data: i64s(1, math.MinInt64, math.MaxInt64, 3, 2000)}},
		},
		{
			name: "uint64 max, uint8, int8",
			body: `{"inputs":[{"name":"a","shape":[2],"datatype":"UINT64","data":[18446744073709551615,0]},` +
				`{"name":"b","shape":[2],"datatype":"UINT8","data":[255,-0]},{"name":"c","shape":[2],"datatype":"INT8","data":[-128,127]}]}`,
			want: []infergate.Tensor{
				{Name: "a", DataType: infergate.UINT64, Shape: []int64{2}, Data: binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, math.MaxUint64), 0)},
				{Name: "b", DataType: infergate.UINT8, Shape: []int64{2}, Data: []byte{255, 0}},
				{Name: "c", DataType: infergate.INT8, Shape: []int64{2}, Data: []byte{0x80, 0x7f}},
			},
		},
		{
			name: "bool forms",
			body: `{"inputs":[{"name":"m","shape":[4],"datatype":"BOOL","data":[true,false,1,0]}]}`,
			want: []infergate.Tensor{{Name: "m", DataType: infergate.BOOL, Shape: []int64{4}, Data: []byte{1, 0, 1, 0}}},
		},
		{
			name: "fp16 and fp64 and null",
			body: `{"inputs":[{"name":"h","shape":[4],"datatype":"FP16","data":[1,-2.5,65504,null]},{"name":"d","shape":[2],"datatype":"FP64","data":[0.1,-0]}]}`,
			want: []infergate.Tensor{
				{Name: "h", DataType: infergate.FP16, Shape: []int64{4}, Data: u16s(0x3c00, 0xc100, 0x7bff, halfNaN)},
				{Name: "d", DataType: infergate.FP64, Shape: []int64{2}, Data: f64s(0.1, math.Copysign(0, -1))},
			},
		},
		{
			name: "scalar and empty tensor, unknown keys skipped",
			body: `{"extra":{"a":[1,{"b":null}]},"inputs":[{"name":"s","shape":[],"datatype":"INT32","data":[7],"x":1},{"name":"e","shape":[0,3],"datatype":"INT32","data":[]}]}`,
			want: []infergate.Tensor{
				{Name: "s", DataType: infergate.INT32, Shape: []int64{}, Data: i32s(7)},
				{Name: "e", DataType: infergate.INT32, Shape: []int64{0, 3}, Data: []byte{}},
			},
		},
		{
			name: "escaped name",
			body: `{"inputs":[{"name":"in\u0070ut\n\"q\"","shape":[1],"datatype":"INT32","data":[1]}]}`,
			want: []infergate.Tensor{{Name: "input\n\"q\"", DataType: infergate.INT32, Shape: []int64{1}, Data: i32s(1)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeInferRequest([]byte(tt.body), -1, Limits{})
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if req.ID != tt.id {
				t.Errorf("id = %q, want %q", req.ID, tt.id)
			}
			checkTensors(t, req.Inputs, tt.want)
		})
	}
}

func checkTensors(t *testing.T, got, want []infergate.Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d tensors, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.DataType != w.DataType || !reflect.DeepEqual(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("tensor %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestDecodeParametersAndOutputs(t *testing.T) {
	body := `{"parameters":{"priority":2,"timeout":1500,"binary_data_output":true},` +
		`"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],` +
		`"outputs":[{"name":"a"},{"name":"b","parameters":{"binary_data":false}},{"name":"c","parameters":{"binary_data":true,"other":[1]}}]}`
	req, err := DecodeInferRequest([]byte(body), -1, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !req.BinaryOutput || req.Parameters["priority"] != 2.0 || req.Parameters["timeout"] != 1500.0 {
		t.Errorf("parameters: %+v binary=%v", req.Parameters, req.BinaryOutput)
	}
	want := []RequestedOutput{{"a", true}, {"b", false}, {"c", true}}
	if !reflect.DeepEqual(req.Outputs, want) {
		t.Errorf("outputs = %+v, want %+v", req.Outputs, want)
	}
	if !req.OutputBinary("a") || req.OutputBinary("b") || !req.OutputBinary("unlisted") {
		t.Error("OutputBinary wrong")
	}
}

func TestDecodeBinary(t *testing.T) {
	header := `{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},` +
		`{"name":"b","shape":[1],"datatype":"INT64","data":[5]},` +
		`{"name":"c","shape":[3],"datatype":"BOOL","parameters":{"binary_data_size":3}}]}`
	body := append([]byte(header), f32s(1.5, -2)...)
	body = append(body, 1, 0, 1)
	req, err := DecodeInferRequest(body, len(header), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	checkTensors(t, req.Inputs, []infergate.Tensor{
		{Name: "a", DataType: infergate.FP32, Shape: []int64{2}, Data: f32s(1.5, -2)},
		{Name: "b", DataType: infergate.INT64, Shape: []int64{1}, Data: i64s(5)},
		{Name: "c", DataType: infergate.BOOL, Shape: []int64{3}, Data: []byte{1, 0, 1}},
	})
}

func TestDecodeBad(t *testing.T) {
	one := func(in string) string { return `{"inputs":[` + in + `]}` }
	tests := []struct {
		name      string
		body      string
		headerLen int // 0 means -1; use -2 for an explicit 0
		bin       []byte
		code      string
		msg       string
	}{
		{name: "empty", body: ``, code: infergate.EInvalid, msg: "malformed JSON"},
		{name: "not object", body: `[1]`, code: infergate.EInvalid, msg: "malformed JSON at offset 0"},
		{name: "truncated", body: `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1`, code: infergate.EInvalid, msg: "malformed JSON"},
		{name: "trailing garbage", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":[1]}`) + `x`, code: infergate.EInvalid, msg: "expected end of JSON"},
		{name: "trailing comma in data", body: one(`{"name":"x","shape":[2],"datatype":"FP32","data":[1,2,]}`), code: infergate.EInvalid, msg: `input "x": data element 2`},
		{name: "missing comma", body: one(`{"name":"x","shape":[2],"datatype":"FP32","data":[1 2]}`), code: infergate.EInvalid, msg: `input "x": malformed JSON`},
		{name: "leading zero", body: one(`{"name":"x","shape":[2],"datatype":"FP32","data":[01,2]}`), code: infergate.EInvalid, msg: "malformed JSON"},
		{name: "NaN literal", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}`), code: infergate.EInvalid, msg: `data element 0`},
		{name: "string element", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":["1"]}`), code: infergate.EInvalid, msg: `expected a number or null`},
		{name: "data not array", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":1}`), code: infergate.EInvalid, msg: `'[' to start "data"`},
		{name: "no inputs", body: `{"inputs":[]}`, code: infergate.EInvalid, msg: "no inputs"},
		{name: "inputs missing", body: `{"id":"x"}`, code: infergate.EInvalid, msg: "no inputs"},
		{name: "unknown datatype", body: one(`{"name":"x","shape":[1],"datatype":"FP8","data":[1]}`), code: infergate.EInvalid, msg: `input "x": unknown datatype "FP8"`},
		{name: "bytes", body: one(`{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}`), code: infergate.EUnprocess, msg: `input "x": BYTES not supported`},
		{name: "too few elements", body: one(`{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2]}`), code: infergate.EInvalid, msg: `input "x": data has 2 elements but the shape needs 3`},
		{name: "too many elements nested", body: one(`{"name":"x","shape":[2],"datatype":"FP32","data":[[1,2],[3]]}`), code: infergate.EInvalid, msg: `data has 3 elements but the shape needs 2`},
		{name: "fractional int64", body: one(`{"name":"ids","shape":[2],"datatype":"INT64","data":[1,2.5]}`), code: infergate.EInvalid, msg: `input "ids": data element 1: 2.5 is not an integer`},
		{name: "int8 overflow", body: one(`{"name":"x","shape":[1],"datatype":"INT8","data":[128]}`), code: infergate.EInvalid, msg: `128 is out of range for INT8`},
		{name: "uint negative", body: one(`{"name":"x","shape":[1],"datatype":"UINT32","data":[-1]}`), code: infergate.EInvalid, msg: `-1 is out of range for UINT32`},
		{name: "int64 overflow", body: one(`{"name":"x","shape":[1],"datatype":"INT64","data":[9223372036854775808]}`), code: infergate.EInvalid, msg: `out of range for INT64`},
		{name: "fp32 overflow", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}`), code: infergate.EInvalid, msg: `1e39 is out of range for FP32`},
		{name: "fp16 overflow", body: one(`{"name":"x","shape":[1],"datatype":"FP16","data":[65520]}`), code: infergate.EInvalid, msg: `65520 is out of range for FP16`},
		{name: "bool 2", body: one(`{"name":"x","shape":[1],"datatype":"BOOL","data":[2]}`), code: infergate.EInvalid, msg: `not a BOOL`},
		{name: "null int", body: one(`{"name":"x","shape":[1],"datatype":"INT32","data":[null]}`), code: infergate.EInvalid, msg: `expected an integer`},
		{name: "huge shape", body: one(`{"name":"x","shape":[1000000000000],"datatype":"FP32","data":[1]}`), code: infergate.ETooLarge, msg: `input "x": shape [1000000000000] has more than 16777216 elements`},
		{name: "overflowing shape", body: one(`{"name":"x","shape":[4294967296,4294967296,4294967296],"datatype":"FP32","data":[1]}`), code: infergate.ETooLarge, msg: "more than"},
		{name: "shape dim too large for int64", body: one(`{"name":"x","shape":[99999999999999999999],"datatype":"FP32","data":[1]}`), code: infergate.ETooLarge, msg: "too large"},
		{name: "negative dim", body: one(`{"name":"x","shape":[-1,3],"datatype":"FP32","data":[1]}`), code: infergate.EInvalid, msg: "dimension -1 is negative"},
		{name: "fractional dim", body: one(`{"name":"x","shape":[1.5],"datatype":"FP32","data":[1]}`), code: infergate.EInvalid, msg: "not an integer"},
		{name: "too many dims", body: one(`{"name":"x","shape":[1,1,1,1,1,1,1,1,1],"datatype":"FP32","data":[1]}`), code: infergate.ETooLarge, msg: "more than 8 dimensions"},
		{name: "missing name", body: one(`{"shape":[1],"datatype":"FP32","data":[1]}`), code: infergate.EInvalid, msg: "inputs[0]: missing name"},
		{name: "missing shape", body: one(`{"name":"x","datatype":"FP32","data":[1]}`), code: infergate.EInvalid, msg: `input "x": missing shape`},
		{name: "missing datatype", body: one(`{"name":"x","shape":[1],"data":[1]}`), code: infergate.EInvalid, msg: `input "x": missing datatype`},
		{name: "missing data", body: one(`{"name":"x","shape":[1],"datatype":"FP32"}`), code: infergate.EInvalid, msg: `input "x": no data`},
		{name: "duplicate input", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":[1]},{"name":"x","shape":[1],"datatype":"FP32","data":[1]}`), code: infergate.EInvalid, msg: `duplicate input "x"`},
		{name: "duplicate key", body: one(`{"name":"x","shape":[1],"shape":[1],"datatype":"FP32","data":[1]}`), code: infergate.EInvalid, msg: `duplicate key "shape"`},
		{name: "wrong id type", body: `{"id":5,"inputs":[]}`, code: infergate.EInvalid, msg: "id: malformed JSON"},
		{name: "bad binary_data_output", body: `{"parameters":{"binary_data_output":"yes"},"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`, code: infergate.EInvalid, msg: "binary_data_output must be a boolean"},
		{name: "classification", body: `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"y","parameters":{"classification":3}}]}`, code: infergate.EUnprocess, msg: "classification"},
		{name: "too many inputs", body: `{"inputs":[` + strings.Repeat(`{"name":"x","shape":[1],"datatype":"FP32","data":[1]},`, 64) + `{"name":"y","shape":[1],"datatype":"FP32","data":[1]}]}`, code: infergate.ETooLarge, msg: "more than 64 inputs"},
		{name: "deep nesting", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":` + strings.Repeat("[", 100) + "1" + strings.Repeat("]", 100) + `}`), code: infergate.EInvalid, msg: "nested deeper than 64"},
		{name: "deep unknown key", body: `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, code: infergate.EInvalid, msg: "nesting deeper than 64"},
		{name: "control char in string", body: "{\"id\":\"a\x01\",\"inputs\":[]}", code: infergate.EInvalid, msg: "control characters"},
		{name: "bad escape", body: `{"id":"a\q","inputs":[]}`, code: infergate.EInvalid, msg: "invalid string"},
		{name: "long number", body: one(`{"name":"x","shape":[1],"datatype":"FP64","data":[1` + strings.Repeat("0", 2000) + `]}`), code: infergate.EInvalid, msg: "number longer than"},

		// Binary section.
		{name: "header length past body", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":[1]}`), headerLen: 1000, code: infergate.EInvalid, msg: "Inference-Header-Content-Length 1000 exceeds the body size"},
		{name: "binary size mismatch with shape", body: one(`{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4}}`), bin: f32s(1), code: infergate.EInvalid, msg: `input "x": binary_data_size 4 does not match shape [2] of FP32 (8 bytes)`},
		{name: "binary section short", body: one(`{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}`), bin: f32s(1), code: infergate.EInvalid, msg: "declare 8 bytes of binary data, the body has 4"},
		{name: "binary section long", body: one(`{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}`), bin: f32s(1, 2), code: infergate.EInvalid, msg: "declare 4 bytes of binary data, the body has 8"},
		{name: "binary without section", body: one(`{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}`), code: infergate.EInvalid, msg: "declare 4 bytes"},
		{name: "trailing bytes, no binary inputs", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":[1]}`), bin: []byte{1}, code: infergate.EInvalid, msg: "declare 0 bytes"},
		{name: "both data and binary", body: one(`{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}}`), bin: f32s(1), code: infergate.EInvalid, msg: "both"},
		{name: "negative binary size", body: one(`{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":-4}}`), code: infergate.EInvalid, msg: "not a non-negative integer"},
		{name: "binary bool byte", body: one(`{"name":"x","shape":[1],"datatype":"BOOL","parameters":{"binary_data_size":1}}`), bin: []byte{7}, code: infergate.EInvalid, msg: "binary BOOL data holds byte 7"},
		{name: "header length zero", body: ``, headerLen: -2, bin: []byte{1, 2}, code: infergate.EInvalid, msg: "malformed JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := append([]byte(tt.body), tt.bin...)
			hl := -1
			switch {
			case tt.headerLen == -2:
				hl = 0
			case tt.headerLen != 0:
				hl = tt.headerLen
			case tt.bin != nil:
				hl = len(tt.body)
			}
			_, err := DecodeInferRequest(body, hl, Limits{})
			if code(err) != tt.code {
				t.Fatalf("code = %q (err %v), want %q", code(err), err, tt.code)
			}
			if msg := infergate.ErrorMessage(err); !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q does not contain %q", msg, tt.msg)
			}
		})
	}
}

// TestHugeShapeDoesNotAllocate checks that a shape within the limits but far
// beyond what the body holds is rejected without allocating for it.
func TestHugeShapeDoesNotAllocate(t *testing.T) {
	body := []byte(`{"inputs":[{"name":"x","shape":[16000000],"datatype":"FP64","data":[1,2,3]}]}`)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := DecodeInferRequest(body, -1, Limits{}); err == nil {
			t.Fatal("want error")
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("allocated %d bytes for 10 decodes of a tiny body", d)
	}
}

// sampleTensors returns one tensor of every supported datatype, with
// awkward values.
func sampleTensors() []infergate.Tensor {
	return []infergate.Tensor{
		{Name: "bool", DataType: infergate.BOOL, Shape: []int64{2, 2}, Data: []byte{1, 0, 0, 1}},
		{Name: "u8", DataType: infergate.UINT8, Shape: []int64{3}, Data: []byte{0, 128, 255}},
		{Name: "u16", DataType: infergate.UINT16, Shape: []int64{2}, Data: u16s(0, 65535)},
		{Name: "u32", DataType: infergate.UINT32, Shape: []int64{2}, Data: binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 0), math.MaxUint32)},
		{Name: "u64", DataType: infergate.UINT64, Shape: []int64{2}, Data: binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 1), math.MaxUint64)},
		{Name: "i8", DataType: infergate.INT8, Shape: []int64{3}, Data: []byte{0x80, 0xff, 0x7f}},
		{Name: "i16", DataType: infergate.INT16, Shape: []int64{2}, Data: u16s(0x8000, 0x7fff)},
		{Name: "i32", DataType: infergate.INT32, Shape: []int64{3}, Data: i32s(math.MinInt32, -1, math.MaxInt32)},
		{Name: "i64", DataType: infergate.INT64, Shape: []int64{3}, Data: i64s(math.MinInt64, 0, math.MaxInt64)},
		{Name: "f16", DataType: infergate.FP16, Shape: []int64{6}, Data: u16s(0x0001, 0x03ff, 0x0400, 0x3555, 0x7bff, 0x8000)},
		{Name: "f32", DataType: infergate.FP32, Shape: []int64{1, 6}, Data: f32s(0.1, -3.4028235e38, 1.4e-45, 1.1754942e-38, 16777217, float32(math.Copysign(0, -1)))},
		{Name: "f64", DataType: infergate.FP64, Shape: []int64{5}, Data: f64s(0.1, math.MaxFloat64, 5e-324, -2.2250738585072014e-308, 1e23)},
		{Name: "empty", DataType: infergate.FP32, Shape: []int64{0, 4}, Data: []byte{}},
		{Name: "scalar", DataType: infergate.INT32, Shape: []int64{}, Data: i32s(42)},
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for _, bin := range []bool{false, true} {
		for _, tensor := range sampleTensors() {
			name := tensor.Name + "/json"
			if bin {
				name = tensor.Name + "/binary"
			}
			t.Run(name, func(t *testing.T) {
				req := &InferRequest{
					ID:         "id-1",
					Parameters: map[string]any{"priority": 1.0, "tag": "x"},
					Inputs:     []infergate.Tensor{tensor},
					Outputs:    []RequestedOutput{{Name: "y", Binary: true}, {Name: "z"}},
				}
				body, hl := AppendInferRequest(nil, req, bin)
				if !bin && hl != len(body) {
					t.Fatalf("headerLen %d != len %d", hl, len(body))
				}
				got, err := DecodeInferRequest(body, hl, Limits{})
				if err != nil {
					t.Fatalf("decode %s: %v", body[:hl], err)
				}
				checkTensors(t, got.Inputs, req.Inputs)
				if got.ID != req.ID || !reflect.DeepEqual(got.Parameters, req.Parameters) || !reflect.DeepEqual(got.Outputs, req.Outputs) {
					t.Errorf("got %+v", got)
				}
			})
		}
	}
}

func TestRequestRoundTripBinaryOutputDefault(t *testing.T) {
	req := &InferRequest{
		Inputs:       []infergate.Tensor{{Name: "x", DataType: infergate.FP32, Shape: []int64{1}, Data: f32s(1)}},
		Outputs:      []RequestedOutput{{Name: "a", Binary: true}, {Name: "b", Binary: false}},
		BinaryOutput: true,
		Parameters:   map[string]any{ParamBinaryDataOutput: false},
	}
	body, hl := AppendInferRequest(nil, req, false)
	got, err := DecodeInferRequest(body, hl, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !got.BinaryOutput || !reflect.DeepEqual(got.Outputs, req.Outputs) {
		t.Errorf("%s -> %+v", body, got)
	}
}

func TestResponseRoundTrip(t *testing.T) {
	outs := sampleTensors()
	for _, mode := range []string{"json", "binary", "mixed"} {
		t.Run(mode, func(t *testing.T) {
			resp := &InferResponse{ModelName: "m", ModelVersion: "3", ID: "r", Parameters: map[string]any{"k": "v"}, Outputs: outs}
			var binFn func(string) bool
			switch mode {
			case "binary":
				binFn = func(string) bool { return true }
			case "mixed":
				binFn = func(n string) bool { return strings.HasPrefix(n, "f") || n == "bool" }
			}
			dst := []byte("prefix")
			body, hl := AppendInferResponse(dst, resp, binFn)
			body = body[len("prefix"):]
			if mode == "json" && hl != len(body) {
				t.Fatalf("headerLen %d != len %d", hl, len(body))
			}
			if mode != "json" {
				if hl == len(body) {
					t.Fatal("no binary section")
				}
			} else {
				hl = -1
			}
			got, err := DecodeInferResponse(body, hl)
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, body)
			}
			if got.ModelName != "m" || got.ModelVersion != "3" || got.ID != "r" || got.Parameters["k"] != "v" {
				t.Errorf("got %+v", got)
			}
			checkTensors(t, got.Outputs, outs)
		})
	}
}

func TestResponseJSONShape(t *testing.T) {
	resp := &InferResponse{ModelName: "m", Outputs: []infergate.Tensor{
		{Name: "y", DataType: infergate.FP32, Shape: []int64{1, 3}, Data: f32s(0.5, float32(math.NaN()), float32(math.Inf(-1)))},
		{Name: "z", DataType: infergate.INT64, Shape: []int64{1}, Data: i64s(3)},
	}}
	body, hl := AppendInferResponse(nil, resp, func(n string) bool { return n == "z" })
	want := `{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[1,3],"data":[0.5,null,null]},` +
		`{"name":"z","datatype":"INT64","shape":[1],"parameters":{"binary_data_size":8}}]}`
	if string(body[:hl]) != want {
		t.Errorf("got  %s\nwant %s", body[:hl], want)
	}
	if !bytes.Equal(body[hl:], i64s(3)) {
		t.Errorf("binary section %v", body[hl:])
	}
	got, err := DecodeInferResponse(body, hl)
	if err != nil {
		t.Fatal(err)
	}
	y := got.Outputs[0].Data
	if !math.IsNaN(float64(math.Float32frombits(binary.LittleEndian.Uint32(y[4:])))) ||
		!math.IsNaN(float64(math.Float32frombits(binary.LittleEndian.Uint32(y[8:])))) {
		t.Errorf("null did not decode as NaN: %v", y)
	}
}

func TestDecodeResponseErrors(t *testing.T) {
	_, err := DecodeInferResponse([]byte(`{"error":"model exploded"}`), -1)
	if code(err) != infergate.EInternal || infergate.ErrorMessage(err) != "model exploded" {
		t.Errorf("error object: %v", err)
	}
	_, err = DecodeInferResponse([]byte(`{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[2],"data":[1]}]}`), -1)
	if code(err) != infergate.EInvalid || !strings.Contains(err.Error(), `output "y": data has 1 elements`) {
		t.Errorf("short data: %v", err)
	}
}

func TestValidateInputs(t *testing.T) {
	specs := []infergate.TensorSpec{
		{Name: "ids", DataType: infergate.INT64, Shape: []int64{-1, -1}},
		{Name: "mask", DataType: infergate.INT64, Shape: []int64{-1, -1}},
		{Name: "emb", DataType: infergate.FP32, Shape: []int64{-1, 768}},
	}
	in := func(name string, dt infergate.DataType, shape ...int64) infergate.Tensor {
		return infergate.Tensor{Name: name, DataType: dt, Shape: shape}
	}
	good := func() []infergate.Tensor {
		return []infergate.Tensor{in("emb", infergate.FP32, 2, 768), in("mask", infergate.INT64, 2, 7), in("ids", infergate.INT64, 2, 7)}
	}
	tests := []struct {
		name     string
		inputs   []infergate.Tensor
		maxBatch int
		batch    int
		msg      string
	}{
		{name: "ok reordered", inputs: good(), maxBatch: 8, batch: 2},
		{name: "ok non-batchable", inputs: good(), maxBatch: 0, batch: 1},
		{name: "unknown", inputs: append(good(), in("extra", infergate.FP32, 1)), maxBatch: 8, msg: `unknown input "extra" (model inputs: "ids", "mask", "emb")`},
		{name: "missing", inputs: good()[:2], maxBatch: 8, msg: `missing input "ids"`},
		{name: "duplicate", inputs: append(good()[:2], in("emb", infergate.FP32, 2, 768)), maxBatch: 8, msg: `duplicate input "emb"`},
		{name: "wrong dtype", inputs: []infergate.Tensor{in("ids", infergate.INT32, 2, 7), in("mask", infergate.INT64, 2, 7), in("emb", infergate.FP32, 2, 768)}, maxBatch: 8, msg: `input "ids": datatype INT32 does not match model datatype INT64`},
		{name: "wrong rank", inputs: []infergate.Tensor{in("ids", infergate.INT64, 14), in("mask", infergate.INT64, 2, 7), in("emb", infergate.FP32, 2, 768)}, maxBatch: 8, msg: `input "ids": shape [14] does not match model shape [-1,-1] (rank 1, want 2)`},
		{name: "fixed dim mismatch", inputs: []infergate.Tensor{in("ids", infergate.INT64, 1, 7), in("mask", infergate.INT64, 1, 7), in("emb", infergate.FP32, 1, 700)}, maxBatch: 8, msg: `input "emb": shape [1,700] does not match model shape [-1,768]`},
		{name: "zero dynamic dim", inputs: []infergate.Tensor{in("ids", infergate.INT64, 2, 0), in("mask", infergate.INT64, 2, 0), in("emb", infergate.FP32, 2, 768)}, maxBatch: 8, msg: `input "ids": shape [2,0] does not match model shape [-1,-1] (dynamic dimensions must be at least 1)`},
		{name: "batch mismatch", inputs: []infergate.Tensor{in("ids", infergate.INT64, 2, 7), in("mask", infergate.INT64, 3, 7), in("emb", infergate.FP32, 2, 768)}, maxBatch: 8, msg: `input "mask": batch size 3 does not match batch size 2 of input "ids"`},
		{name: "batch too large", inputs: []infergate.Tensor{in("ids", infergate.INT64, 9, 7), in("mask", infergate.INT64, 9, 7), in("emb", infergate.FP32, 9, 768)}, maxBatch: 8, msg: `input "ids": batch size 9 exceeds the model's max batch size 8`},
		{name: "batch mismatch ignored when not batchable", inputs: []infergate.Tensor{in("ids", infergate.INT64, 2, 7), in("mask", infergate.INT64, 3, 7), in("emb", infergate.FP32, 2, 768)}, maxBatch: 0, batch: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &InferRequest{Inputs: tt.inputs}
			batch, err := ValidateInputs(req, specs, tt.maxBatch)
			if tt.msg != "" {
				if code(err) != infergate.EInvalid || infergate.ErrorMessage(err) != tt.msg {
					t.Fatalf("err = %v, want %q", err, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if batch != tt.batch {
				t.Errorf("batch = %d, want %d", batch, tt.batch)
			}
			for i, sp := range specs {
				if req.Inputs[i].Name != sp.Name {
					t.Errorf("inputs[%d] = %q, want %q", i, req.Inputs[i].Name, sp.Name)
				}
			}
		})
	}
}
