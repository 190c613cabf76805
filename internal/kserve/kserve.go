// Package kserve implements the wire format of the KServe Open Inference
// Protocol v2 (REST/JSON) infer endpoint, with Triton's binary tensor data
// extension, for both the server (decode requests, encode responses) and
// the client (encode requests, decode responses).
//
// Requests and responses are JSON objects:
//
//	request:  {"id", "parameters", "inputs": [{"name", "shape", "datatype", "parameters", "data"}],
//	           "outputs": [{"name", "parameters"}]}
//	response: {"model_name", "model_version", "id", "parameters",
//	           "outputs": [{"name", "shape", "datatype", "parameters", "data"}]}
//
// With the binary extension the HTTP body is the JSON header (its length in
// the Inference-Header-Content-Length HTTP header) followed by the raw
// little-endian bytes of every tensor whose parameters carry
// "binary_data_size", in tensor order. A requested output asks for binary
// with parameters.binary_data; the request parameter binary_data_output sets
// the default for all outputs.
//
// The codec is on the hot path, so tensor data never goes through
// encoding/json: a small strict scanner (scan.go, data.go) parses the JSON
// and appends elements straight into the tensors' byte slices. Only the
// free-form "parameters" objects at request/response level are decoded by
// encoding/json (into map[string]any, numbers as float64).
//
// Conventions and decisions:
//
//   - "data" may be flat or nested arrays; it is flattened in row-major
//     order and only its element count is checked against the shape.
//   - FP16/FP32/FP64 accept any JSON number (integers included) and round
//     correctly to the element type; values whose magnitude rounds to
//     infinity are rejected. JSON has no NaN or ±Inf: the encoders write
//     them as null and the decoders read null as NaN (so ±Inf does not
//     survive a JSON round trip; use binary data for that).
//   - INT*/UINT* accept integral numbers only (3, 3.0 and 3e0 are fine,
//     3.5 is not) within the type's range. BOOL accepts true, false, 0, 1;
//     binary BOOL bytes must be 0 or 1.
//   - BYTES is rejected with EUnprocess ("BYTES not supported").
//   - Shape dims must be non-negative integers; the element count is
//     checked against Limits before anything is allocated, and JSON data is
//     never allocated beyond what the remaining body could hold.
//   - Numbers longer than 1024 bytes and nesting deeper than 64 are
//     rejected as malformed. Duplicate keys in the objects the codec
//     interprets are rejected; unknown keys are skipped (validated).
//   - Binary inputs alias the request body when it is aligned for the
//     element type and are copied otherwise, so Data is always aligned.
//     The caller must not reuse the body while the request is in use.
//
// All errors are *infergate.Error: EInvalid (malformed or inconsistent;
// the message names the tensor), ETooLarge (Limits) or EUnprocess (BYTES,
// classification).
package kserve

import (
	"encoding/json"
	"fmt"
	"unsafe"

	"github.com/infergate/infergate"
)

// HeaderContentLength is the HTTP header that carries the length of the
// JSON part of a body with binary tensor data.
const HeaderContentLength = "Inference-Header-Content-Length"

// Parameter names of the binary tensor data extension.
const (
	ParamBinaryDataSize   = "binary_data_size"
	ParamBinaryData       = "binary_data"
	ParamBinaryDataOutput = "binary_data_output"
)

// Limits bound what a request may ask for. Zero fields take the defaults.
type Limits struct {
	// MaxElements is the largest element count of one tensor
	// (default 16M).
	MaxElements int64
	// MaxDims is the largest rank of one tensor (default 8).
	MaxDims int
	// MaxInputs is the largest number of inputs, and separately of
	// requested outputs, in one request (default 64).
	MaxInputs int
}

// Default limits.
const (
	DefaultMaxElements = 16 << 20
	DefaultMaxDims     = 8
	DefaultMaxInputs   = 64
)

func (l Limits) withDefaults() Limits {
	if l.MaxElements <= 0 {
		l.MaxElements = DefaultMaxElements
	}
	if l.MaxDims <= 0 {
		l.MaxDims = DefaultMaxDims
	}
	if l.MaxInputs <= 0 {
		l.MaxInputs = DefaultMaxInputs
	}
	return l
}

// responseLimits bound DecodeInferResponse; responses come from a server
// the client chose, and allocation is bounded by the body size anyway.
var responseLimits = Limits{MaxElements: 1 << 34, MaxDims: 32, MaxInputs: 1 << 12}

// RequestedOutput is one entry of a request's "outputs".
type RequestedOutput struct {
	Name string
	// Binary is the output's parameters.binary_data if given, else the
	// request's binary_data_output.
	Binary bool
}

// InferRequest is a decoded v2 infer request.
type InferRequest struct {
	ID string
	// Parameters are the request-level parameters as decoded JSON (numbers
	// are float64), e.g. priority, timeout, binary_data_output. Nil when
	// absent.
	Parameters map[string]any
	// Inputs hold raw little-endian data, decoded from JSON "data" or taken
	// from the binary section.
	Inputs []infergate.Tensor
	// Outputs are the requested outputs; empty means all outputs.
	Outputs []RequestedOutput
	// BinaryOutput is parameters.binary_data_output == true.
	BinaryOutput bool
}

// OutputBinary reports whether output name should be sent as binary data:
// the requested output's Binary if it is listed, else BinaryOutput. It is
// the binary argument AppendInferResponse wants.
func (r *InferRequest) OutputBinary(name string) bool {
	for i := range r.Outputs {
		if r.Outputs[i].Name == name {
			return r.Outputs[i].Binary
		}
	}
	return r.BinaryOutput
}

// InferResponse is a v2 infer response.
type InferResponse struct {
	ModelName, ModelVersion, ID string
	Parameters                  map[string]any
	Outputs                     []infergate.Tensor
}

// DecodeInferRequest decodes a v2 infer request. headerLen < 0 means the
// whole body is JSON; otherwise body[:headerLen] is the JSON header (the
// Inference-Header-Content-Length) and the rest holds the binary tensors,
// in input order, of the inputs whose parameters carry binary_data_size.
func DecodeInferRequest(body []byte, headerLen int, lim Limits) (*InferRequest, error) {
	lim = lim.withDefaults()
	header, bin, err := split(body, headerLen)
	if err != nil {
		return nil, err
	}
	d := decoder{s: scanner{b: header}, lim: lim, kind: "input"}
	req := &InferRequest{}
	// binaryOut records each requested output's explicit binary_data:
	// 0 absent, 1 false, 2 true. It is resolved once parameters are known.
	var binaryOut []uint8
	var sizes []int64
	var seen uint8
	const (
		seenID = 1 << iota
		seenParams
		seenInputs
		seenOutputs
	)
	if err := d.s.expect('{'); err != nil {
		return nil, err
	}
	for first := true; ; {
		ok, err := d.s.more('}', &first)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		k, err := d.s.key()
		if err != nil {
			return nil, err
		}
		var bit uint8
		switch string(k) {
		case "id":
			bit = seenID
		case "parameters":
			bit = seenParams
		case "inputs":
			bit = seenInputs
		case "outputs":
			bit = seenOutputs
		}
		if seen&bit != 0 {
			return nil, invalid("duplicate key %q in request", k)
		}
		seen |= bit
		switch bit {
		case seenID:
			req.ID, err = d.stringValue("id")
		case seenParams:
			req.Parameters, err = d.params("parameters")
		case seenInputs:
			req.Inputs, sizes, err = d.tensors()
		case seenOutputs:
			req.Outputs, binaryOut, err = d.requestedOutputs()
		default:
			err = d.s.skip(1)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := d.s.end(); err != nil {
		return nil, err
	}
	if len(req.Inputs) == 0 {
		return nil, invalid("request has no inputs")
	}
	if name, dup := duplicateName(req.Inputs); dup {
		return nil, invalid("duplicate input %q", name)
	}
	if v, ok := req.Parameters[ParamBinaryDataOutput]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return nil, invalid("parameters.%s must be a boolean", ParamBinaryDataOutput)
		}
		req.BinaryOutput = b
	}
	for i, b := range binaryOut {
		req.Outputs[i].Binary = b == 2 || (b == 0 && req.BinaryOutput)
	}
	if err := attachBinary(req.Inputs, sizes, bin, "input"); err != nil {
		return nil, err
	}
	return req, nil
}

// duplicateName returns a name that occurs twice in ts.
func duplicateName(ts []infergate.Tensor) (string, bool) {
	if len(ts) <= 32 {
		for i := 1; i < len(ts); i++ {
			for j := 0; j < i; j++ {
				if ts[i].Name == ts[j].Name {
					return ts[i].Name, true
				}
			}
		}
		return "", false
	}
	seen := make(map[string]struct{}, len(ts))
	for i := range ts {
		if _, ok := seen[ts[i].Name]; ok {
			return ts[i].Name, true
		}
		seen[ts[i].Name] = struct{}{}
	}
	return "", false
}

// split separates the JSON header from the binary section.
func split(body []byte, headerLen int) (header, bin []byte, err error) {
	if headerLen < 0 {
		return body, nil, nil
	}
	if headerLen > len(body) {
		return nil, nil, invalid("%s %d exceeds the body size %d", HeaderContentLength, headerLen, len(body))
	}
	return body[:headerLen], body[headerLen:], nil
}

// attachBinary gives every tensor with sizes[i] >= 0 its bytes from bin,
// in order. bin must be consumed exactly.
func attachBinary(ts []infergate.Tensor, sizes []int64, bin []byte, kind string) error {
	var total int64
	for i, sz := range sizes {
		if sz < 0 {
			continue
		}
		t := &ts[i]
		want := t.NumElements() * int64(t.DataType.Size())
		if sz != want {
			return invalid("%s %q: %s %d does not match shape %s of %s (%d bytes)",
				kind, t.Name, ParamBinaryDataSize, sz, formatShape(t.Shape), t.DataType, want)
		}
		total += sz
	}
	if total != int64(len(bin)) {
		return invalid("binary data size mismatch: %ss declare %d bytes of binary data, the body has %d bytes after the JSON header",
			kind, total, len(bin))
	}
	off := int64(0)
	for i, sz := range sizes {
		if sz < 0 {
			continue
		}
		t := &ts[i]
		b := bin[off : off+sz : off+sz]
		off += sz
		if t.DataType == infergate.BOOL {
			for _, v := range b {
				if v > 1 {
					return invalid("%s %q: binary BOOL data holds byte %d (want 0 or 1)", kind, t.Name, v)
				}
			}
		}
		if sz > 0 && uintptr(unsafe.Pointer(&b[0]))%uintptr(t.DataType.Size()) != 0 {
			b = append([]byte(nil), b...) // misaligned for the element type: copy
		}
		t.Data = b
	}
	return nil
}

// decoder parses the objects of a request or response header.
type decoder struct {
	s    scanner
	lim  Limits
	kind string // "input" or "output", for messages
	dims []int64
}

func (d *decoder) stringValue(field string) (string, error) {
	if d.s.peek() != '"' {
		return "", prefix(field, d.s.syntaxErr("string"))
	}
	v, err := d.s.str()
	return string(v), err
}

// params decodes a free-form parameters object (or null) with encoding/json.
func (d *decoder) params(field string) (map[string]any, error) {
	if c := d.s.peek(); c != '{' && c != 'n' {
		return nil, prefix(field, d.s.syntaxErr("object"))
	}
	raw, err := d.s.raw()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalid("%s: %v", field, err)
	}
	return m, nil
}

// tensors parses the "inputs" (or response "outputs") array. sizes[i] is
// the binary_data_size of tensor i, or -1 when it carried JSON data.
func (d *decoder) tensors() ([]infergate.Tensor, []int64, error) {
	if err := d.s.expect('['); err != nil {
		return nil, nil, prefix(d.kind+"s", err)
	}
	var ts []infergate.Tensor
	var sizes []int64
	for first := true; ; {
		ok, err := d.s.more(']', &first)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return ts, sizes, nil
		}
		if len(ts) >= d.lim.MaxInputs {
			return nil, nil, infergate.Errorf(infergate.ETooLarge, "more than %d %ss", d.lim.MaxInputs, d.kind)
		}
		if ts == nil {
			ts = make([]infergate.Tensor, 0, 1)
		}
		t, sz, err := d.tensor(len(ts))
		if err != nil {
			return nil, nil, err
		}
		ts = append(ts, t)
		sizes = append(sizes, sz)
	}
}

// tensor parses one tensor object: name, shape, datatype, parameters
// (binary_data_size) and data.
func (d *decoder) tensor(idx int) (t infergate.Tensor, binSize int64, err error) {
	s := &d.s
	binSize = -1
	label := func() string {
		if t.Name != "" {
			return fmt.Sprintf("%s %q", d.kind, t.Name)
		}
		return fmt.Sprintf("%ss[%d]", d.kind, idx)
	}
	if err := s.expect('{'); err != nil {
		return t, 0, prefix(label(), err)
	}
	var seen uint8
	const (
		seenName = 1 << iota
		seenShape
		seenDT
		seenParams
		seenData
	)
	n := int64(-1) // element count once shape and datatype are validated
	deferred := -1 // offset of a "data" value seen before shape/datatype
	for first := true; ; {
		ok, err := s.more('}', &first)
		if err != nil {
			return t, 0, prefix(label(), err)
		}
		if !ok {
			break
		}
		k, err := s.key()
		if err != nil {
			return t, 0, prefix(label(), err)
		}
		var bit uint8
		switch string(k) {
		case "name":
			bit = seenName
		case "shape":
			bit = seenShape
		case "datatype":
			bit = seenDT
		case "parameters":
			bit = seenParams
		case "data":
			bit = seenData
		}
		if seen&bit != 0 {
			return t, 0, invalid("%s: duplicate key %q", label(), k)
		}
		seen |= bit
		switch bit {
		case seenName:
			var v []byte
			if v, err = s.str(); err == nil {
				t.Name = string(v)
			}
		case seenShape:
			t.Shape, err = d.shape()
		case seenDT:
			var v []byte
			if v, err = s.str(); err == nil {
				t.DataType = dataType(v)
			}
		case seenParams:
			binSize, err = d.tensorParams()
		case seenData:
			if seen&(seenShape|seenDT) == seenShape|seenDT {
				if n, err = d.check(&t, label); err == nil {
					t.Data, err = s.data(t.DataType, n, label)
				}
			} else {
				s.ws()
				deferred = s.i
				err = s.skip(1)
			}
		default:
			err = s.skip(1)
		}
		if err != nil {
			return t, 0, prefix2(label(), err)
		}
	}
	switch {
	case seen&seenName == 0 || t.Name == "":
		return t, 0, invalid("%s: missing name", label())
	case seen&seenDT == 0:
		return t, 0, invalid("%s: missing datatype", label())
	case seen&seenShape == 0:
		return t, 0, invalid("%s: missing shape", label())
	}
	if n < 0 {
		if n, err = d.check(&t, label); err != nil {
			return t, 0, err
		}
	}
	switch {
	case seen&seenData != 0 && binSize >= 0:
		return t, 0, invalid("%s: has both \"data\" and parameters.%s", label(), ParamBinaryDataSize)
	case seen&seenData == 0 && binSize < 0:
		return t, 0, invalid("%s: no data (give \"data\" or parameters.%s)", label(), ParamBinaryDataSize)
	}
	if deferred >= 0 {
		sub := scanner{b: s.b[:s.i], i: deferred}
		if t.Data, err = sub.data(t.DataType, n, label); err != nil {
			return t, 0, err
		}
	}
	return t, binSize, nil
}

// prefix2 is prefix for errors that may already carry the label.
func prefix2(label string, err error) error {
	if e, ok := err.(*infergate.Error); ok && len(e.Message) >= len(label) && e.Message[:len(label)] == label {
		return err
	}
	return prefix(label, err)
}

// check validates a tensor's datatype and shape against the limits and
// returns its element count.
func (d *decoder) check(t *infergate.Tensor, label func() string) (int64, error) {
	switch {
	case t.DataType == "BYTES":
		return 0, infergate.Errorf(infergate.EUnprocess, "%s: BYTES not supported", label())
	case !t.DataType.Valid():
		return 0, invalid("%s: unknown datatype %q", label(), t.DataType)
	}
	n := int64(1)
	for _, dim := range t.Shape {
		if dim == 0 {
			return 0, nil
		}
	}
	for _, dim := range t.Shape {
		if dim > d.lim.MaxElements || n > d.lim.MaxElements/dim {
			return 0, infergate.Errorf(infergate.ETooLarge, "%s: shape %s has more than %d elements",
				label(), formatShape(t.Shape), d.lim.MaxElements)
		}
		n *= dim
	}
	return n, nil
}

// shape parses a shape array of non-negative integers. The shapes of one
// request share one backing array (d.dims), to save allocations.
func (d *decoder) shape() ([]int64, error) {
	s := &d.s
	if err := s.expect('['); err != nil {
		return nil, prefix("shape", err)
	}
	if cap(d.dims)-len(d.dims) < d.lim.MaxDims && cap(d.dims)-len(d.dims) < 8 {
		d.dims = make([]int64, 0, 16)
	}
	start := len(d.dims)
	var num number
	for first := true; ; {
		ok, err := s.more(']', &first)
		if err != nil {
			return nil, prefix("shape", err)
		}
		if !ok {
			return d.dims[start:len(d.dims):len(d.dims)], nil
		}
		if len(d.dims)-start >= d.lim.MaxDims {
			return nil, infergate.Errorf(infergate.ETooLarge, "shape has more than %d dimensions", d.lim.MaxDims)
		}
		if c := s.peek(); c != '-' && (c < '0' || c > '9') {
			return nil, prefix("shape", s.syntaxErr("an integer"))
		}
		if err := s.number(&num); err != nil {
			return nil, prefix("shape", err)
		}
		v, e := num.signed(64)
		switch {
		case e == intNotInteger:
			return nil, invalid("shape: dimension %s is not an integer", tokText(num.tok(s.b)))
		case e == intOverflow:
			return nil, infergate.Errorf(infergate.ETooLarge, "shape: dimension %s is too large", tokText(num.tok(s.b)))
		case v < 0:
			return nil, invalid("shape: dimension %d is negative", v)
		}
		d.dims = append(d.dims, v)
	}
}

// tensorParams parses a tensor's parameters object and returns its
// binary_data_size, or -1. Other parameters are ignored.
func (d *decoder) tensorParams() (int64, error) {
	s := &d.s
	if s.peek() == 'n' {
		return -1, s.literal("null")
	}
	if err := s.expect('{'); err != nil {
		return 0, prefix("parameters", err)
	}
	size := int64(-1)
	for first := true; ; {
		ok, err := s.more('}', &first)
		if err != nil {
			return 0, prefix("parameters", err)
		}
		if !ok {
			return size, nil
		}
		k, err := s.key()
		if err != nil {
			return 0, prefix("parameters", err)
		}
		if string(k) != ParamBinaryDataSize {
			if err := s.skip(2); err != nil {
				return 0, err
			}
			continue
		}
		if size >= 0 {
			return 0, invalid("parameters: duplicate key %q", ParamBinaryDataSize)
		}
		var num number
		if c := s.peek(); c != '-' && (c < '0' || c > '9') {
			return 0, prefix("parameters."+ParamBinaryDataSize, s.syntaxErr("an integer"))
		}
		if err := s.number(&num); err != nil {
			return 0, err
		}
		v, e := num.signed(64)
		if e != intOK || v < 0 {
			return 0, invalid("parameters.%s: %s is not a non-negative integer", ParamBinaryDataSize, tokText(num.tok(s.b)))
		}
		size = v
	}
}

// requestedOutputs parses a request's "outputs" array. binary[i] records
// outputs[i]'s explicit binary_data: 0 absent, 1 false, 2 true.
func (d *decoder) requestedOutputs() ([]RequestedOutput, []uint8, error) {
	s := &d.s
	if err := s.expect('['); err != nil {
		return nil, nil, prefix("outputs", err)
	}
	var outs []RequestedOutput
	var binary []uint8
	for first := true; ; {
		ok, err := s.more(']', &first)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return outs, binary, nil
		}
		if len(outs) >= d.lim.MaxInputs {
			return nil, nil, infergate.Errorf(infergate.ETooLarge, "more than %d requested outputs", d.lim.MaxInputs)
		}
		label := fmt.Sprintf("outputs[%d]", len(outs))
		if err := s.expect('{'); err != nil {
			return nil, nil, prefix(label, err)
		}
		var o RequestedOutput
		var bin uint8
		var haveName, haveParams bool
		for first := true; ; {
			ok, err := s.more('}', &first)
			if err != nil {
				return nil, nil, prefix(label, err)
			}
			if !ok {
				break
			}
			k, err := s.key()
			if err != nil {
				return nil, nil, prefix(label, err)
			}
			switch string(k) {
			case "name":
				if haveName {
					return nil, nil, invalid("%s: duplicate key \"name\"", label)
				}
				haveName = true
				var v []byte
				if v, err = s.str(); err == nil {
					o.Name = string(v)
				}
			case "parameters":
				if haveParams {
					return nil, nil, invalid("%s: duplicate key \"parameters\"", label)
				}
				haveParams = true
				bin, err = d.outputParams(label)
			default:
				err = s.skip(2)
			}
			if err != nil {
				return nil, nil, prefix2(label, err)
			}
		}
		if o.Name == "" {
			return nil, nil, invalid("%s: missing name", label)
		}
		for i := range outs {
			if outs[i].Name == o.Name {
				return nil, nil, invalid("duplicate requested output %q", o.Name)
			}
		}
		outs = append(outs, o)
		binary = append(binary, bin)
	}
}

// outputParams parses a requested output's parameters: binary_data (bool);
// classification is refused; others are ignored.
func (d *decoder) outputParams(label string) (uint8, error) {
	s := &d.s
	if s.peek() == 'n' {
		return 0, s.literal("null")
	}
	if err := s.expect('{'); err != nil {
		return 0, prefix(label+": parameters", err)
	}
	var bin uint8
	for first := true; ; {
		ok, err := s.more('}', &first)
		if err != nil {
			return 0, err
		}
		if !ok {
			return bin, nil
		}
		k, err := s.key()
		if err != nil {
			return 0, err
		}
		switch string(k) {
		case ParamBinaryData:
			v, err := s.boolean()
			if err != nil {
				return 0, invalid("%s: parameters.%s must be a boolean", label, ParamBinaryData)
			}
			bin = 1
			if v {
				bin = 2
			}
		case "classification":
			return 0, infergate.Errorf(infergate.EUnprocess, "%s: the classification extension is not supported", label)
		default:
			if err := s.skip(3); err != nil {
				return 0, err
			}
		}
	}
}

// dataType maps a datatype name to its constant without allocating for
// the known names.
func dataType(b []byte) infergate.DataType {
	switch string(b) {
	case "BOOL":
		return infergate.BOOL
	case "UINT8":
		return infergate.UINT8
	case "UINT16":
		return infergate.UINT16
	case "UINT32":
		return infergate.UINT32
	case "UINT64":
		return infergate.UINT64
	case "INT8":
		return infergate.INT8
	case "INT16":
		return infergate.INT16
	case "INT32":
		return infergate.INT32
	case "INT64":
		return infergate.INT64
	case "FP16":
		return infergate.FP16
	case "FP32":
		return infergate.FP32
	case "FP64":
		return infergate.FP64
	case "BYTES":
		return "BYTES"
	}
	return infergate.DataType(b)
}

// formatShape formats a shape as [1,768].
func formatShape(shape []int64) string {
	b := make([]byte, 0, 2+len(shape)*4)
	return string(appendShape(b, shape))
}
