package onnx

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// MaxRank is the largest tensor rank Decode accepts.
const MaxRank = 64

// Field numbers of the ONNX messages (onnx.proto, IR version 10).
const (
	modelIRVersion       = 1
	modelProducerName    = 2
	modelProducerVersion = 3
	modelDomain          = 4
	modelModelVersion    = 5
	modelDocString       = 6
	modelGraph           = 7
	modelOpsetImport     = 8

	opsetDomain  = 1
	opsetVersion = 2

	graphNode        = 1
	graphName        = 2
	graphInitializer = 5
	graphDocString   = 10
	graphInput       = 11
	graphOutput      = 12
	graphValueInfo   = 13

	nodeInput     = 1
	nodeOutput    = 2
	nodeName      = 3
	nodeOpType    = 4
	nodeAttribute = 5
	nodeDomain    = 7

	attrName   = 1
	attrF      = 2
	attrI      = 3
	attrS      = 4
	attrT      = 5
	attrG      = 6
	attrFloats = 7
	attrInts   = 8
	attrType   = 20

	tensorDims         = 1
	tensorDataType     = 2
	tensorFloatData    = 4
	tensorInt32Data    = 5
	tensorInt64Data    = 7
	tensorName         = 8
	tensorRawData      = 9
	tensorDoubleData   = 10
	tensorUint64Data   = 11
	tensorDataLocation = 14

	valueInfoName = 1
	valueInfoType = 2

	typeTensorType = 1

	tensorTypeElemType = 1
	tensorTypeShape    = 2

	shapeDim = 1

	dimValue = 1
	dimParam = 2
)

// field is one decoded protobuf field.
type field struct {
	num protowire.Number
	typ protowire.Type
	u   uint64 // value of a varint, fixed32 or fixed64 field
	b   []byte // value of a bytes field (aliases the input)
}

// next decodes the field at the start of b.
func next(b []byte) (field, []byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return field{}, nil, protowire.ParseError(n)
	}
	b = b[n:]
	f := field{num: num, typ: typ}
	switch typ {
	case protowire.VarintType:
		f.u, n = protowire.ConsumeVarint(b)
	case protowire.Fixed32Type:
		var v uint32
		v, n = protowire.ConsumeFixed32(b)
		f.u = uint64(v)
	case protowire.Fixed64Type:
		f.u, n = protowire.ConsumeFixed64(b)
	case protowire.BytesType:
		f.b, n = protowire.ConsumeBytes(b)
	case protowire.StartGroupType:
		_, n = protowire.ConsumeGroup(num, b)
	default:
		return field{}, nil, fmt.Errorf("unexpected wire type %d for field %d", typ, num)
	}
	if n < 0 {
		return field{}, nil, protowire.ParseError(n)
	}
	return f, b[n:], nil
}

// parse calls fn for each field of the message in b.
func parse(b []byte, msg string, fn func(f field) error) error {
	for len(b) > 0 {
		f, rest, err := next(b)
		if err != nil {
			return fmt.Errorf("%s: %w", msg, err)
		}
		if err := fn(f); err != nil {
			return fmt.Errorf("%s: %w", msg, err)
		}
		b = rest
	}
	return nil
}

func (f field) wrongType() error {
	return fmt.Errorf("field %d has wrong wire type %d", f.num, f.typ)
}

func (f field) varint() (uint64, error) {
	if f.typ != protowire.VarintType {
		return 0, f.wrongType()
	}
	return f.u, nil
}

func (f field) int64() (int64, error) {
	v, err := f.varint()
	return int64(v), err
}

// int32 decodes an int32 field, which protobuf sign-extends to 64 bits.
func (f field) int32() (int32, error) {
	v, err := f.varint()
	return int32(int64(v)), err
}

func (f field) bytes() ([]byte, error) {
	if f.typ != protowire.BytesType {
		return nil, f.wrongType()
	}
	return f.b, nil
}

func (f field) string() (string, error) {
	b, err := f.bytes()
	return string(b), err
}

// appendVarints appends a repeated varint field, packed or not.
func (f field) appendVarints(dst []uint64) ([]uint64, error) {
	switch f.typ {
	case protowire.VarintType:
		return append(dst, f.u), nil
	case protowire.BytesType:
		b := f.b
		// Each varint takes at least one byte, so len(b) bounds the count.
		if dst == nil {
			dst = make([]uint64, 0, min(len(b), 1024))
		}
		for len(b) > 0 {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			dst = append(dst, v)
			b = b[n:]
		}
		return dst, nil
	}
	return nil, f.wrongType()
}

func (f field) appendInt64s(dst []int64) ([]int64, error) {
	switch f.typ {
	case protowire.VarintType:
		return append(dst, int64(f.u)), nil
	case protowire.BytesType:
		vs, err := f.appendVarints(nil)
		if err != nil {
			return nil, err
		}
		if dst == nil {
			dst = make([]int64, 0, len(vs))
		}
		for _, v := range vs {
			dst = append(dst, int64(v))
		}
		return dst, nil
	}
	return nil, f.wrongType()
}

func (f field) appendInt32s(dst []int32) ([]int32, error) {
	vs, err := f.appendVarints(nil)
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		dst = append(dst, int32(int64(v)))
	}
	return dst, nil
}

func (f field) appendUint64s(dst []uint64) ([]uint64, error) {
	return f.appendVarints(dst)
}

func (f field) appendFloats(dst []float32) ([]float32, error) {
	switch f.typ {
	case protowire.Fixed32Type:
		return append(dst, math.Float32frombits(uint32(f.u))), nil
	case protowire.BytesType:
		if len(f.b)%4 != 0 {
			return nil, fmt.Errorf("packed float field %d has %d bytes, not a multiple of 4", f.num, len(f.b))
		}
		if dst == nil {
			dst = make([]float32, 0, len(f.b)/4)
		}
		for i := 0; i+4 <= len(f.b); i += 4 {
			v, _ := protowire.ConsumeFixed32(f.b[i:])
			dst = append(dst, math.Float32frombits(v))
		}
		return dst, nil
	}
	return nil, f.wrongType()
}

func (f field) appendDoubles(dst []float64) ([]float64, error) {
	switch f.typ {
	case protowire.Fixed64Type:
		return append(dst, math.Float64frombits(f.u)), nil
	case protowire.BytesType:
		if len(f.b)%8 != 0 {
			return nil, fmt.Errorf("packed double field %d has %d bytes, not a multiple of 8", f.num, len(f.b))
		}
		if dst == nil {
			dst = make([]float64, 0, len(f.b)/8)
		}
		for i := 0; i+8 <= len(f.b); i += 8 {
			v, _ := protowire.ConsumeFixed64(f.b[i:])
			dst = append(dst, math.Float64frombits(v))
		}
		return dst, nil
	}
	return nil, f.wrongType()
}

// Decode parses an ONNX ModelProto. The returned model's tensors' RawData
// alias data; the caller must not modify data while it uses the model.
func Decode(data []byte) (*Model, error) {
	m := &Model{}
	hasGraph := false
	err := parse(data, "ModelProto", func(f field) error {
		var err error
		switch f.num {
		case modelIRVersion:
			m.IRVersion, err = f.int64()
		case modelProducerName:
			m.ProducerName, err = f.string()
		case modelProducerVersion:
			m.ProducerVersion, err = f.string()
		case modelDomain:
			m.Domain, err = f.string()
		case modelModelVersion:
			m.ModelVersion, err = f.int64()
		case modelDocString:
			m.DocString, err = f.string()
		case modelGraph:
			var b []byte
			if b, err = f.bytes(); err == nil {
				// A repeated message field is merged; ONNX writers emit it
				// once, so we simply decode into the same graph.
				hasGraph = true
				err = decodeGraph(b, &m.Graph)
			}
		case modelOpsetImport:
			var b []byte
			if b, err = f.bytes(); err == nil {
				var o OpsetID
				if err = decodeOpset(b, &o); err == nil {
					m.Opsets = append(m.Opsets, o)
				}
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	if !hasGraph {
		return nil, errors.New("onnx: model has no graph")
	}
	// Drop graph inputs that are initializers.
	if len(m.Graph.Initializers) > 0 && len(m.Graph.Inputs) > 0 {
		inits := make(map[string]bool, len(m.Graph.Initializers))
		for i := range m.Graph.Initializers {
			inits[m.Graph.Initializers[i].Name] = true
		}
		kept := m.Graph.Inputs[:0]
		for _, in := range m.Graph.Inputs {
			if !inits[in.Name] {
				kept = append(kept, in)
			}
		}
		m.Graph.Inputs = kept
	}
	return m, nil
}

func decodeOpset(b []byte, o *OpsetID) error {
	return parse(b, "OperatorSetIdProto", func(f field) error {
		var err error
		switch f.num {
		case opsetDomain:
			o.Domain, err = f.string()
		case opsetVersion:
			o.Version, err = f.int64()
		}
		return err
	})
}

func decodeGraph(b []byte, g *Graph) error {
	return parse(b, "GraphProto", func(f field) error {
		var err error
		switch f.num {
		case graphName:
			g.Name, err = f.string()
		case graphDocString:
			g.DocString, err = f.string()
		case graphNode:
			var mb []byte
			if mb, err = f.bytes(); err == nil {
				var n Node
				if err = decodeNode(mb, &n); err == nil {
					g.Nodes = append(g.Nodes, n)
				}
			}
		case graphInitializer:
			var mb []byte
			if mb, err = f.bytes(); err == nil {
				var t Tensor
				if err = decodeTensor(mb, &t); err == nil {
					g.Initializers = append(g.Initializers, t)
				}
			}
		case graphInput, graphOutput, graphValueInfo:
			var mb []byte
			if mb, err = f.bytes(); err == nil {
				var v ValueInfo
				if err = decodeValueInfo(mb, &v); err == nil {
					switch f.num {
					case graphInput:
						g.Inputs = append(g.Inputs, v)
					case graphOutput:
						g.Outputs = append(g.Outputs, v)
					default:
						g.ValueInfo = append(g.ValueInfo, v)
					}
				}
			}
		}
		return err
	})
}

func decodeNode(b []byte, n *Node) error {
	return parse(b, "NodeProto", func(f field) error {
		var err error
		var s string
		switch f.num {
		case nodeInput:
			if s, err = f.string(); err == nil {
				n.Inputs = append(n.Inputs, s)
			}
		case nodeOutput:
			if s, err = f.string(); err == nil {
				n.Outputs = append(n.Outputs, s)
			}
		case nodeName:
			n.Name, err = f.string()
		case nodeOpType:
			n.OpType, err = f.string()
		case nodeDomain:
			n.Domain, err = f.string()
		case nodeAttribute:
			var mb []byte
			if mb, err = f.bytes(); err == nil {
				var a Attribute
				if err = decodeAttribute(mb, &a); err == nil {
					n.Attributes = append(n.Attributes, a)
				}
			}
		}
		return err
	})
}

func decodeAttribute(b []byte, a *Attribute) error {
	// Which value fields were present, to infer the type of attributes
	// written without one (IR version < 2).
	var hasF, hasI, hasS, hasFloats, hasInts, hasOther bool
	err := parse(b, "AttributeProto", func(f field) error {
		var err error
		switch f.num {
		case attrName:
			a.Name, err = f.string()
		case attrType:
			var t int32
			t, err = f.int32()
			a.Type = AttrType(t)
		case attrF:
			if f.typ != protowire.Fixed32Type {
				return f.wrongType()
			}
			a.F, hasF = math.Float32frombits(uint32(f.u)), true
		case attrI:
			a.I, err = f.int64()
			hasI = true
		case attrS:
			a.S, err = f.bytes()
			hasS = true
		case attrFloats:
			a.Floats, err = f.appendFloats(a.Floats)
			hasFloats = true
		case attrInts:
			a.Ints, err = f.appendInt64s(a.Ints)
			hasInts = true
		case attrT, attrG:
			hasOther = true
		}
		return err
	})
	if err != nil {
		return err
	}
	if a.Type == AttrUndefined {
		switch {
		case hasF:
			a.Type = AttrFloat
		case hasI:
			a.Type = AttrInt
		case hasS:
			a.Type = AttrString
		case hasFloats:
			a.Type = AttrFloats
		case hasInts:
			a.Type = AttrInts
		case hasOther:
			a.Type = AttrTensor // or graph: kept raw either way
		}
	}
	switch a.Type {
	case AttrFloat, AttrInt, AttrString, AttrFloats, AttrInts:
	default:
		a.Raw = b
	}
	return nil
}

func decodeTensor(b []byte, t *Tensor) error {
	var dataLocation int32
	err := parse(b, "TensorProto", func(f field) error {
		var err error
		switch f.num {
		case tensorDims:
			t.Dims, err = f.appendInt64s(t.Dims)
			if err == nil && len(t.Dims) > MaxRank {
				err = fmt.Errorf("rank %d exceeds %d", len(t.Dims), MaxRank)
			}
		case tensorDataType:
			var v int32
			v, err = f.int32()
			t.ElemType = ElemType(v)
		case tensorName:
			t.Name, err = f.string()
		case tensorRawData:
			t.RawData, err = f.bytes()
		case tensorFloatData:
			t.FloatData, err = f.appendFloats(t.FloatData)
		case tensorInt32Data:
			t.Int32Data, err = f.appendInt32s(t.Int32Data)
		case tensorInt64Data:
			t.Int64Data, err = f.appendInt64s(t.Int64Data)
		case tensorDoubleData:
			t.DoubleData, err = f.appendDoubles(t.DoubleData)
		case tensorUint64Data:
			t.Uint64Data, err = f.appendUint64s(t.Uint64Data)
		case tensorDataLocation:
			dataLocation, err = f.int32()
		}
		return err
	})
	if err != nil {
		return err
	}
	t.External = dataLocation == 1
	n, err := checkedNumElements(t.Dims)
	if err != nil {
		return fmt.Errorf("TensorProto %q: %w", t.Name, err)
	}
	if t.External {
		return nil
	}
	if t.RawData != nil {
		if size := t.ElemType.Size(); size > 0 && int64(len(t.RawData)) != n*int64(size) {
			return fmt.Errorf("TensorProto %q: raw_data has %d bytes, want %d for %v%v",
				t.Name, len(t.RawData), n*int64(size), t.ElemType, t.Dims)
		}
	}
	for _, c := range []struct {
		name string
		n    int
	}{
		{"float_data", len(t.FloatData)},
		{"int32_data", len(t.Int32Data)},
		{"int64_data", len(t.Int64Data)},
		{"double_data", len(t.DoubleData)},
		{"uint64_data", len(t.Uint64Data)},
	} {
		// Complex types store two values per element.
		want := n
		if t.ElemType == Complex64 || t.ElemType == Complex128 {
			want = 2 * n
		}
		if c.n != 0 && int64(c.n) != want {
			return fmt.Errorf("TensorProto %q: %s has %d values, want %d", t.Name, c.name, c.n, want)
		}
	}
	return nil
}

func decodeValueInfo(b []byte, v *ValueInfo) error {
	return parse(b, "ValueInfoProto", func(f field) error {
		var err error
		switch f.num {
		case valueInfoName:
			v.Name, err = f.string()
		case valueInfoType:
			var mb []byte
			if mb, err = f.bytes(); err == nil {
				err = decodeType(mb, v)
			}
		}
		return err
	})
}

func decodeType(b []byte, v *ValueInfo) error {
	return parse(b, "TypeProto", func(f field) error {
		if f.num != typeTensorType {
			return nil // sequence, map, optional, sparse: not a tensor
		}
		mb, err := f.bytes()
		if err != nil {
			return err
		}
		return parse(mb, "TypeProto.Tensor", func(f field) error {
			var err error
			switch f.num {
			case tensorTypeElemType:
				var t int32
				t, err = f.int32()
				v.ElemType = ElemType(t)
			case tensorTypeShape:
				var sb []byte
				if sb, err = f.bytes(); err == nil {
					v.HasShape = true
					err = decodeShape(sb, v)
				}
			}
			return err
		})
	})
}

func decodeShape(b []byte, v *ValueInfo) error {
	return parse(b, "TensorShapeProto", func(f field) error {
		if f.num != shapeDim {
			return nil
		}
		db, err := f.bytes()
		if err != nil {
			return err
		}
		if len(v.Shape) >= MaxRank {
			return fmt.Errorf("rank exceeds %d", MaxRank)
		}
		dim, param := int64(-1), ""
		err = parse(db, "Dimension", func(f field) error {
			var err error
			switch f.num {
			case dimValue:
				var d int64
				if d, err = f.int64(); err == nil {
					if d >= 0 {
						dim = d
					} else {
						dim = -1
					}
					param = ""
				}
			case dimParam:
				param, err = f.string()
				dim = -1
			}
			return err
		})
		if err != nil {
			return err
		}
		v.Shape = append(v.Shape, dim)
		v.DimParams = append(v.DimParams, param)
		return nil
	})
}
