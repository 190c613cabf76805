package kserve

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/infergate/infergate"
)

// AppendInferResponse appends the encoding of resp to dst. binary(name)
// says whether an output goes in the binary section (binary may be nil: all
// JSON). It returns the extended buffer and the length of the JSON header
// it appended; when dst is empty and nothing is binary, headerLen ==
// len(body). Send headerLen as Inference-Header-Content-Length whenever it
// differs from the body length.
//
// Outputs are expected to be well-formed (len(Data) == elements × size);
// JSON data holds len(Data)/size elements and binary_data_size is
// len(Data), so a malformed output shows up as an error on the client.
// NaN and ±Inf are written as null. Parameters that encoding/json cannot
// marshal are left out.
func AppendInferResponse(dst []byte, resp *InferResponse, binary func(name string) bool) (body []byte, headerLen int) {
	start := len(dst)
	dst = append(dst, `{"model_name":`...)
	dst = appendString(dst, resp.ModelName)
	if resp.ModelVersion != "" {
		dst = append(dst, `,"model_version":`...)
		dst = appendString(dst, resp.ModelVersion)
	}
	if resp.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, resp.ID)
	}
	if len(resp.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		dst = appendParams(dst, resp.Parameters, "", false)
	}
	dst = append(dst, `,"outputs":[`...)
	var binBuf [16]bool
	isBin := binBuf[:0]
	nbin := 0
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		b := binary != nil && binary(t.Name)
		if b {
			nbin++
		}
		isBin = append(isBin, b)
		dst = appendTensorHeader(dst, i, t, b)
	}
	dst = append(dst, "]}"...)
	headerLen = len(dst) - start
	if nbin > 0 {
		for i := range resp.Outputs {
			if isBin[i] {
				dst = append(dst, resp.Outputs[i].Data...)
			}
		}
	}
	return dst, headerLen
}

// AppendInferRequest appends the encoding of req to dst, with every input
// in the binary section when binaryInputs is set. req.BinaryOutput is sent
// as parameters.binary_data_output (replacing any such key in
// req.Parameters); each requested output's Binary is sent as binary_data
// where it differs from that default. It returns the extended buffer and
// the length of the JSON header appended.
func AppendInferRequest(dst []byte, req *InferRequest, binaryInputs bool) (body []byte, headerLen int) {
	start := len(dst)
	dst = append(dst, '{')
	comma := false
	if req.ID != "" {
		dst = append(dst, `"id":`...)
		dst = appendString(dst, req.ID)
		comma = true
	}
	if len(req.Parameters) > 0 || req.BinaryOutput {
		if comma {
			dst = append(dst, ',')
		}
		dst = append(dst, `"parameters":`...)
		dst = appendParams(dst, req.Parameters, ParamBinaryDataOutput, req.BinaryOutput)
		comma = true
	}
	if comma {
		dst = append(dst, ',')
	}
	dst = append(dst, `"inputs":[`...)
	for i := range req.Inputs {
		dst = appendTensorHeader(dst, i, &req.Inputs[i], binaryInputs)
	}
	dst = append(dst, ']')
	if len(req.Outputs) > 0 {
		dst = append(dst, `,"outputs":[`...)
		for i, o := range req.Outputs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = appendString(dst, o.Name)
			if o.Binary != req.BinaryOutput {
				dst = append(dst, `,"parameters":{"binary_data":`...)
				dst = strconv.AppendBool(dst, o.Binary)
				dst = append(dst, '}')
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, '}')
	headerLen = len(dst) - start
	if binaryInputs {
		for i := range req.Inputs {
			dst = append(dst, req.Inputs[i].Data...)
		}
	}
	return dst, headerLen
}

// appendTensorHeader appends one tensor object: name, datatype, shape and
// either data or parameters.binary_data_size.
func appendTensorHeader(dst []byte, i int, t *infergate.Tensor, isBin bool) []byte {
	if i > 0 {
		dst = append(dst, ',')
	}
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, t.Name)
	dst = append(dst, `,"datatype":`...)
	dst = appendString(dst, string(t.DataType))
	dst = append(dst, `,"shape":`...)
	dst = appendShape(dst, t.Shape)
	if isBin {
		dst = append(dst, `,"parameters":{"binary_data_size":`...)
		dst = strconv.AppendInt(dst, int64(len(t.Data)), 10)
		return append(dst, "}}"...)
	}
	dst = append(dst, `,"data":`...)
	dst = appendData(dst, t.DataType, t.Data)
	return append(dst, '}')
}

// appendShape appends a shape as [1,768].
func appendShape(dst []byte, shape []int64) []byte {
	dst = append(dst, '[')
	for i, d := range shape {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, d, 10)
	}
	return append(dst, ']')
}

// appendData appends raw little-endian elements as a flat JSON array.
func appendData(dst []byte, dt infergate.DataType, data []byte) []byte {
	size := dt.Size()
	if size == 0 {
		return append(dst, "[]"...)
	}
	n := len(data) / size
	data = data[:n*size]
	dst = slices.Grow(dst, 2+n*estimateWidth(dt))
	dst = append(dst, '[')
	le := binary.LittleEndian
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch dt {
		case infergate.FP32:
			dst = appendFloat(dst, float64(math.Float32frombits(le.Uint32(data[i*4:]))), 32)
		case infergate.FP64:
			dst = appendFloat(dst, math.Float64frombits(le.Uint64(data[i*8:])), 64)
		case infergate.FP16:
			dst = appendFloat(dst, float64(halfToFloat32(le.Uint16(data[i*2:]))), 32)
		case infergate.INT8:
			dst = strconv.AppendInt(dst, int64(int8(data[i])), 10)
		case infergate.INT16:
			dst = strconv.AppendInt(dst, int64(int16(le.Uint16(data[i*2:]))), 10)
		case infergate.INT32:
			dst = strconv.AppendInt(dst, int64(int32(le.Uint32(data[i*4:]))), 10)
		case infergate.INT64:
			dst = strconv.AppendInt(dst, int64(le.Uint64(data[i*8:])), 10)
		case infergate.UINT8:
			dst = strconv.AppendUint(dst, uint64(data[i]), 10)
		case infergate.UINT16:
			dst = strconv.AppendUint(dst, uint64(le.Uint16(data[i*2:])), 10)
		case infergate.UINT32:
			dst = strconv.AppendUint(dst, uint64(le.Uint32(data[i*4:])), 10)
		case infergate.UINT64:
			dst = strconv.AppendUint(dst, le.Uint64(data[i*8:]), 10)
		case infergate.BOOL:
			if data[i] != 0 {
				dst = append(dst, "true"...)
			} else {
				dst = append(dst, "false"...)
			}
		}
	}
	return append(dst, ']')
}

func estimateWidth(dt infergate.DataType) int {
	switch dt {
	case infergate.FP32, infergate.FP16:
		return 12
	case infergate.FP64:
		return 20
	case infergate.BOOL, infergate.INT8, infergate.UINT8:
		return 4
	}
	return 8
}

// appendFloat writes the shortest decimal that reads back as the same
// float of the given size; NaN and ±Inf become null.
func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			b, err := json.Marshal(s) // escapes, and maps invalid UTF-8 to U+FFFD
			if err != nil {
				return append(dst, `""`...)
			}
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// appendParams appends a parameters object with sorted keys. Values
// encoding/json cannot marshal are dropped. When override is not empty,
// that key is replaced by overrideVal (written only if true).
func appendParams(dst []byte, m map[string]any, override string, overrideVal bool) []byte {
	keys := make([]string, 0, len(m)+1)
	for k := range m {
		if override == "" || k != override {
			keys = append(keys, k)
		}
	}
	if override != "" && overrideVal {
		keys = append(keys, override)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	first := true
	for _, k := range keys {
		var v []byte
		if override != "" && k == override {
			v = []byte("true")
		} else {
			var err error
			if v, err = json.Marshal(m[k]); err != nil {
				continue
			}
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = append(dst, v...)
	}
	return append(dst, '}')
}
