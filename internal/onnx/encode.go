package onnx

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Encode serialises m as an ONNX ModelProto. It writes the same subset that
// Decode reads: repeated scalar fields that onnx.proto declares packed
// (float_data, int32_data, int64_data, double_data, uint64_data) are packed,
// the others (dims, ints, floats) are not. Attributes kept raw by Decode are
// written back verbatim. The output is deterministic.
func Encode(m *Model) []byte {
	graph := encodeGraph(&m.Graph)
	b := make([]byte, 0, len(graph)+256)
	if m.IRVersion != 0 {
		b = appendVarintField(b, modelIRVersion, uint64(m.IRVersion))
	}
	for _, o := range m.Opsets {
		var ob []byte
		if o.Domain != "" {
			ob = appendStringField(ob, opsetDomain, o.Domain)
		}
		ob = appendVarintField(ob, opsetVersion, uint64(o.Version))
		b = appendBytesField(b, modelOpsetImport, ob)
	}
	b = appendStringIf(b, modelProducerName, m.ProducerName)
	b = appendStringIf(b, modelProducerVersion, m.ProducerVersion)
	b = appendStringIf(b, modelDomain, m.Domain)
	if m.ModelVersion != 0 {
		b = appendVarintField(b, modelModelVersion, uint64(m.ModelVersion))
	}
	b = appendStringIf(b, modelDocString, m.DocString)
	b = appendBytesField(b, modelGraph, graph)
	return b
}

func encodeGraph(g *Graph) []byte {
	type part struct {
		num protowire.Number
		b   []byte
	}
	var parts []part
	for i := range g.Nodes {
		parts = append(parts, part{graphNode, encodeNode(&g.Nodes[i])})
	}
	for i := range g.Initializers {
		parts = append(parts, part{graphInitializer, encodeTensor(&g.Initializers[i])})
	}
	for i := range g.Inputs {
		parts = append(parts, part{graphInput, encodeValueInfo(&g.Inputs[i])})
	}
	for i := range g.Outputs {
		parts = append(parts, part{graphOutput, encodeValueInfo(&g.Outputs[i])})
	}
	for i := range g.ValueInfo {
		parts = append(parts, part{graphValueInfo, encodeValueInfo(&g.ValueInfo[i])})
	}
	size := len(g.Name) + len(g.DocString) + 32
	for _, p := range parts {
		size += protowire.SizeTag(p.num) + protowire.SizeBytes(len(p.b))
	}
	b := make([]byte, 0, size)
	// Field order follows onnx.proto's numbering except that nodes come
	// first, as in files written by the reference implementation.
	i := 0
	for ; i < len(parts) && parts[i].num == graphNode; i++ {
		b = appendBytesField(b, parts[i].num, parts[i].b)
	}
	b = appendStringIf(b, graphName, g.Name)
	for ; i < len(parts); i++ {
		b = appendBytesField(b, parts[i].num, parts[i].b)
	}
	b = appendStringIf(b, graphDocString, g.DocString)
	return b
}

func encodeNode(n *Node) []byte {
	var b []byte
	for _, s := range n.Inputs {
		b = appendStringField(b, nodeInput, s)
	}
	for _, s := range n.Outputs {
		b = appendStringField(b, nodeOutput, s)
	}
	b = appendStringIf(b, nodeName, n.Name)
	b = appendStringIf(b, nodeOpType, n.OpType)
	for i := range n.Attributes {
		b = appendBytesField(b, nodeAttribute, encodeAttribute(&n.Attributes[i]))
	}
	b = appendStringIf(b, nodeDomain, n.Domain)
	return b
}

func encodeAttribute(a *Attribute) []byte {
	if a.Raw != nil {
		return a.Raw
	}
	var b []byte
	b = appendStringField(b, attrName, a.Name)
	switch a.Type {
	case AttrFloat:
		b = protowire.AppendTag(b, attrF, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(a.F))
	case AttrInt:
		b = appendVarintField(b, attrI, uint64(a.I))
	case AttrString:
		b = appendBytesField(b, attrS, a.S)
	case AttrFloats:
		for _, f := range a.Floats {
			b = protowire.AppendTag(b, attrFloats, protowire.Fixed32Type)
			b = protowire.AppendFixed32(b, math.Float32bits(f))
		}
	case AttrInts:
		for _, v := range a.Ints {
			b = appendVarintField(b, attrInts, uint64(v))
		}
	}
	b = appendVarintField(b, attrType, uint64(a.Type))
	return b
}

func encodeTensor(t *Tensor) []byte {
	size := len(t.RawData) + 4*len(t.FloatData) + 10*(len(t.Int32Data)+len(t.Int64Data)+len(t.Uint64Data)+len(t.Dims)) +
		8*len(t.DoubleData) + len(t.Name) + 64
	b := make([]byte, 0, size)
	for _, d := range t.Dims {
		b = appendVarintField(b, tensorDims, uint64(d))
	}
	b = appendVarintField(b, tensorDataType, uint64(int64(t.ElemType)))
	if len(t.FloatData) > 0 {
		b = protowire.AppendTag(b, tensorFloatData, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(4*len(t.FloatData)))
		for _, f := range t.FloatData {
			b = protowire.AppendFixed32(b, math.Float32bits(f))
		}
	}
	if len(t.Int32Data) > 0 {
		b = appendPackedVarints(b, tensorInt32Data, len(t.Int32Data), func(i int) uint64 { return uint64(int64(t.Int32Data[i])) })
	}
	if len(t.Int64Data) > 0 {
		b = appendPackedVarints(b, tensorInt64Data, len(t.Int64Data), func(i int) uint64 { return uint64(t.Int64Data[i]) })
	}
	b = appendStringIf(b, tensorName, t.Name)
	if t.RawData != nil {
		b = appendBytesField(b, tensorRawData, t.RawData)
	}
	if len(t.DoubleData) > 0 {
		b = protowire.AppendTag(b, tensorDoubleData, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(8*len(t.DoubleData)))
		for _, f := range t.DoubleData {
			b = protowire.AppendFixed64(b, math.Float64bits(f))
		}
	}
	if len(t.Uint64Data) > 0 {
		b = appendPackedVarints(b, tensorUint64Data, len(t.Uint64Data), func(i int) uint64 { return t.Uint64Data[i] })
	}
	if t.External {
		b = appendVarintField(b, tensorDataLocation, 1)
	}
	return b
}

func encodeValueInfo(v *ValueInfo) []byte {
	var tt []byte
	tt = appendVarintField(tt, tensorTypeElemType, uint64(int64(v.ElemType)))
	if v.HasShape {
		var shape []byte
		for i, d := range v.Shape {
			var db []byte
			switch {
			case i < len(v.DimParams) && v.DimParams[i] != "":
				db = appendStringField(db, dimParam, v.DimParams[i])
			case d >= 0:
				db = appendVarintField(db, dimValue, uint64(d))
			}
			shape = appendBytesField(shape, shapeDim, db)
		}
		tt = appendBytesField(tt, tensorTypeShape, shape)
	}
	var b []byte
	b = appendStringField(b, valueInfoName, v.Name)
	b = appendBytesField(b, valueInfoType, appendBytesField(nil, typeTensorType, tt))
	return b
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendStringIf(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return appendStringField(b, num, s)
}

func appendPackedVarints(b []byte, num protowire.Number, n int, at func(int) uint64) []byte {
	size := 0
	for i := 0; i < n; i++ {
		size += protowire.SizeVarint(at(i))
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	for i := 0; i < n; i++ {
		b = protowire.AppendVarint(b, at(i))
	}
	return b
}
