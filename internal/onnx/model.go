// Package onnx reads and writes the subset of the ONNX ModelProto format that
// infergate needs: a graph of nodes with scalar and list attributes, tensor
// initializers, and typed graph inputs and outputs.
//
// The wire format is handled directly with protowire; there is no generated
// code. Decode never panics on malformed input: it returns an error, and it
// bounds every allocation by the size of its input.
package onnx

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/infergate/infergate"
)

// ElemType is an ONNX TensorProto.DataType value.
type ElemType int32

// The ONNX element types.
const (
	Undefined  ElemType = 0
	Float      ElemType = 1
	Uint8      ElemType = 2
	Int8       ElemType = 3
	Uint16     ElemType = 4
	Int16      ElemType = 5
	Int32      ElemType = 6
	Int64      ElemType = 7
	String     ElemType = 8
	Bool       ElemType = 9
	Float16    ElemType = 10
	Double     ElemType = 11
	Uint32     ElemType = 12
	Uint64     ElemType = 13
	Complex64  ElemType = 14
	Complex128 ElemType = 15
	BFloat16   ElemType = 16
)

var elemNames = map[ElemType]string{
	Undefined: "UNDEFINED", Float: "FLOAT", Uint8: "UINT8", Int8: "INT8",
	Uint16: "UINT16", Int16: "INT16", Int32: "INT32", Int64: "INT64",
	String: "STRING", Bool: "BOOL", Float16: "FLOAT16", Double: "DOUBLE",
	Uint32: "UINT32", Uint64: "UINT64", Complex64: "COMPLEX64",
	Complex128: "COMPLEX128", BFloat16: "BFLOAT16",
}

func (t ElemType) String() string {
	if s, ok := elemNames[t]; ok {
		return s
	}
	return fmt.Sprintf("elemtype(%d)", int32(t))
}

// Size is the size in bytes of one element as stored in raw_data, or 0 for
// STRING and unknown types.
func (t ElemType) Size() int {
	switch t {
	case Uint8, Int8, Bool:
		return 1
	case Uint16, Int16, Float16, BFloat16:
		return 2
	case Float, Int32, Uint32:
		return 4
	case Int64, Uint64, Double, Complex64:
		return 8
	case Complex128:
		return 16
	}
	return 0
}

// DataType maps t to the infergate data type; ok is false for types
// infergate does not serve (STRING, BFLOAT16, complex, ...).
func (t ElemType) DataType() (dt infergate.DataType, ok bool) {
	switch t {
	case Float:
		return infergate.FP32, true
	case Uint8:
		return infergate.UINT8, true
	case Int8:
		return infergate.INT8, true
	case Uint16:
		return infergate.UINT16, true
	case Int16:
		return infergate.INT16, true
	case Int32:
		return infergate.INT32, true
	case Int64:
		return infergate.INT64, true
	case Bool:
		return infergate.BOOL, true
	case Float16:
		return infergate.FP16, true
	case Double:
		return infergate.FP64, true
	case Uint32:
		return infergate.UINT32, true
	case Uint64:
		return infergate.UINT64, true
	}
	return "", false
}

// ElemTypeOf is the inverse of ElemType.DataType.
func ElemTypeOf(dt infergate.DataType) (ElemType, bool) {
	for t := Float; t <= Uint64; t++ {
		if d, ok := t.DataType(); ok && d == dt {
			return t, true
		}
	}
	return Undefined, false
}

// Model is a decoded ModelProto.
type Model struct {
	IRVersion       int64
	ProducerName    string
	ProducerVersion string
	Domain          string
	ModelVersion    int64
	DocString       string
	Opsets          []OpsetID
	Graph           Graph
}

// OpsetID is an OperatorSetIdProto. The default ONNX domain is "" (or
// "ai.onnx").
type OpsetID struct {
	Domain  string
	Version int64
}

// Opset returns the imported version of domain ("" and "ai.onnx" are the
// same domain), or 0 if the model does not import it.
func (m *Model) Opset(domain string) int64 {
	if domain == "ai.onnx" {
		domain = ""
	}
	for _, o := range m.Opsets {
		d := o.Domain
		if d == "ai.onnx" {
			d = ""
		}
		if d == domain {
			return o.Version
		}
	}
	return 0
}

// Graph is a decoded GraphProto.
type Graph struct {
	Name         string
	DocString    string
	Nodes        []Node
	Initializers []Tensor
	// Inputs are the graph's real inputs: Decode drops graph inputs that
	// name an initializer (older exporters list every weight as an input).
	Inputs  []ValueInfo
	Outputs []ValueInfo
	// ValueInfo holds the optional type information of intermediate values.
	ValueInfo []ValueInfo
}

// Node is a decoded NodeProto. An empty input name is an omitted optional
// input.
type Node struct {
	Name       string
	OpType     string
	Domain     string
	Inputs     []string
	Outputs    []string
	Attributes []Attribute
}

// Attr returns the attribute called name, or nil.
func (n *Node) Attr(name string) *Attribute {
	for i := range n.Attributes {
		if n.Attributes[i].Name == name {
			return &n.Attributes[i]
		}
	}
	return nil
}

// AttrType is an AttributeProto.AttributeType value.
type AttrType int32

// The attribute types. Only FLOAT, INT, STRING, FLOATS and INTS are decoded
// into fields; attributes of any other type keep their encoded bytes in Raw.
const (
	AttrUndefined AttrType = 0
	AttrFloat     AttrType = 1
	AttrInt       AttrType = 2
	AttrString    AttrType = 3
	AttrTensor    AttrType = 4
	AttrGraph     AttrType = 5
	AttrFloats    AttrType = 6
	AttrInts      AttrType = 7
	AttrStrings   AttrType = 8
)

// Attribute is a decoded AttributeProto.
type Attribute struct {
	Name   string
	Type   AttrType
	F      float32
	I      int64
	S      []byte
	Floats []float32
	Ints   []int64
	// Raw is the whole encoded AttributeProto for an attribute whose type
	// is not decoded (TENSOR, GRAPH, STRINGS, ...); Encode writes it back
	// verbatim.
	Raw []byte
}

// Tensor is a decoded TensorProto. Exactly one of the data fields is
// normally set. RawData aliases the buffer passed to Decode.
type Tensor struct {
	Name       string
	ElemType   ElemType
	Dims       []int64
	RawData    []byte
	FloatData  []float32
	Int32Data  []int32
	Int64Data  []int64
	DoubleData []float64
	Uint64Data []uint64
	// External is set when the tensor's data lives in an external file,
	// which this package does not read.
	External bool
}

// NumElements is the product of the tensor's dims (1 for a scalar).
func (t *Tensor) NumElements() int64 { return infergate.NumElements(t.Dims) }

// Float32s returns the elements of a FLOAT tensor, from raw_data or
// float_data, as a new slice.
func (t *Tensor) Float32s() ([]float32, error) {
	if t.ElemType != Float {
		return nil, fmt.Errorf("onnx: tensor %q is %v, not FLOAT", t.Name, t.ElemType)
	}
	if t.External {
		return nil, fmt.Errorf("onnx: tensor %q uses external data, which is not supported", t.Name)
	}
	n, err := checkedNumElements(t.Dims)
	if err != nil {
		return nil, fmt.Errorf("onnx: tensor %q: %w", t.Name, err)
	}
	switch {
	case t.RawData != nil:
		if int64(len(t.RawData)) != n*4 {
			return nil, fmt.Errorf("onnx: tensor %q: raw_data has %d bytes, want %d", t.Name, len(t.RawData), n*4)
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.RawData[4*i:]))
		}
		return out, nil
	case int64(len(t.FloatData)) == n:
		return append([]float32(nil), t.FloatData...), nil
	}
	return nil, fmt.Errorf("onnx: tensor %q: has %d float_data values, want %d", t.Name, len(t.FloatData), n)
}

// NewFloatTensor returns a FLOAT tensor holding data as little-endian
// raw_data.
func NewFloatTensor(name string, dims []int64, data []float32) Tensor {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, ElemType: Float, Dims: append([]int64(nil), dims...), RawData: raw}
}

// ValueInfo is a decoded ValueInfoProto of tensor type.
type ValueInfo struct {
	Name     string
	ElemType ElemType
	// HasShape reports whether a shape was given. Without one the rank is
	// unknown and Shape is nil.
	HasShape bool
	// Shape holds the dimensions; -1 is a dynamic dimension (a dim_param
	// or a dimension without a value).
	Shape []int64
	// DimParams holds the symbolic name of each dimension, "" where there
	// is none. It is nil or as long as Shape.
	DimParams []string
}

// Spec converts v to an infergate.TensorSpec. It fails for element types
// infergate does not support and for an unknown rank.
func (v *ValueInfo) Spec() (infergate.TensorSpec, error) {
	dt, ok := v.ElemType.DataType()
	if !ok {
		return infergate.TensorSpec{}, fmt.Errorf("onnx: %q has unsupported element type %v", v.Name, v.ElemType)
	}
	if !v.HasShape {
		return infergate.TensorSpec{}, fmt.Errorf("onnx: %q has no shape", v.Name)
	}
	return infergate.TensorSpec{Name: v.Name, DataType: dt, Shape: append([]int64{}, v.Shape...)}, nil
}

// maxElements bounds a tensor's element count so that byte sizes of any
// element type fit in an int64.
const maxElements = 1 << 58

// checkedNumElements is the product of dims, failing on a negative
// dimension or a product too large to address.
func checkedNumElements(dims []int64) (int64, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d", d)
		}
		if d != 0 && n > maxElements/d {
			return 0, fmt.Errorf("dimensions %v overflow", dims)
		}
		n *= d
	}
	return n, nil
}
