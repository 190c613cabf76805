package gorun

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/infergate/infergate/internal/onnx"
)

// Supported lists the ONNX operators gorun executes.
var Supported = []string{"Add", "Div", "Flatten", "Gemm", "Identity", "MatMul", "Mul", "Relu", "Sigmoid", "Softmax", "Sub"}

// newOp builds the op for node n of a model importing the given version of
// the default opset.
func newOp(n *onnx.Node, opset int64) (op, error) {
	switch n.OpType {
	case "Gemm":
		if err := arity(n, 2, 3); err != nil {
			return nil, err
		}
		o := &gemmOp{alpha: 1, beta: 1}
		var err error
		if o.alpha, err = attrFloat(n, "alpha", 1); err != nil {
			return nil, err
		}
		if o.beta, err = attrFloat(n, "beta", 1); err != nil {
			return nil, err
		}
		if o.transA, err = attrBool(n, "transA"); err != nil {
			return nil, err
		}
		if o.transB, err = attrBool(n, "transB"); err != nil {
			return nil, err
		}
		return o, nil
	case "MatMul":
		return &matMulOp{}, arity(n, 2, 2)
	case "Add", "Sub", "Mul", "Div":
		return &binaryOp{kind: n.OpType[0]}, arity(n, 2, 2)
	case "Relu", "Sigmoid", "Identity":
		return &unaryOp{kind: n.OpType[0]}, arity(n, 1, 1)
	case "Softmax":
		def := int64(-1)
		if opset > 0 && opset < 13 {
			def = 1
		}
		axis, err := attrInt(n, "axis", def)
		if err != nil {
			return nil, err
		}
		return &softmaxOp{axis: axis}, arity(n, 1, 1)
	case "Flatten":
		axis, err := attrInt(n, "axis", 1)
		if err != nil {
			return nil, err
		}
		return &flattenOp{axis: axis}, arity(n, 1, 1)
	}
	return nil, fmt.Errorf("operator %s is not supported by gorun (supported: %v)", n.OpType, Supported)
}

// arity checks that n has between min and max inputs, the first min of
// them present.
func arity(n *onnx.Node, min, max int) error {
	ins := len(n.Inputs)
	for ins > min && n.Inputs[ins-1] == "" {
		ins--
	}
	if ins < min || ins > max {
		return fmt.Errorf("has %d inputs, want %d to %d", ins, min, max)
	}
	for i := 0; i < min; i++ {
		if n.Inputs[i] == "" {
			return fmt.Errorf("required input %d is missing", i)
		}
	}
	return nil
}

func attrInt(n *onnx.Node, name string, def int64) (int64, error) {
	a := n.Attr(name)
	if a == nil {
		return def, nil
	}
	if a.Type != onnx.AttrInt {
		return 0, fmt.Errorf("attribute %s has type %d, want INT", name, a.Type)
	}
	return a.I, nil
}

func attrBool(n *onnx.Node, name string) (bool, error) {
	v, err := attrInt(n, name, 0)
	return v != 0, err
}

func attrFloat(n *onnx.Node, name string, def float32) (float32, error) {
	a := n.Attr(name)
	if a == nil {
		return def, nil
	}
	if a.Type != onnx.AttrFloat {
		return 0, fmt.Errorf("attribute %s has type %d, want FLOAT", name, a.Type)
	}
	return a.F, nil
}

// sgemm computes C = A·Bᵀ (B is n×k) on the session's threads.
func (s *Session) sgemm(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	parallelGemm(s.pool, s.threads, s.gemm, true, m, n, k, a, lda, b, ldb, c, ldc)
}

// transpose writes the cols×rows transpose of the rows×cols matrix src to
// dst.
func transpose(dst, src []float32, rows, cols int) {
	const blk = 32
	for i0 := 0; i0 < rows; i0 += blk {
		for j0 := 0; j0 < cols; j0 += blk {
			for i := i0; i < min(i0+blk, rows); i++ {
				for j := j0; j < min(j0+blk, cols); j++ {
					dst[j*rows+i] = src[i*cols+j]
				}
			}
		}
	}
}

func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

// mulDims multiplies dims, giving -1 if any is unknown.
func mulDims(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return -1
		}
		n *= d
	}
	return n
}

// gemmOp is ONNX Gemm: Y = alpha·op(A)·op(B) + beta·C, C broadcast to Y.
type gemmOp struct {
	alpha, beta    float32
	transA, transB bool
	packedB        []float32 // a constant B as n×k; nil when B is dynamic
}

func (o *gemmOp) infer(dst []int64, in []*value) ([]int64, error) {
	a, b := in[0].shape, in[1].shape
	if len(a) != 2 || len(b) != 2 {
		return nil, fmt.Errorf("A %v and B %v must be matrices", a, b)
	}
	m, k := a[0], a[1]
	if o.transA {
		m, k = k, m
	}
	kb, n := b[0], b[1]
	if o.transB {
		kb, n = n, kb
	}
	if k >= 0 && kb >= 0 && k != kb {
		return nil, fmt.Errorf("A %v and B %v do not match (transA=%v, transB=%v)", a, b, o.transA, o.transB)
	}
	if len(in) > 2 && in[2] != nil {
		c := in[2].shape
		if len(c) > 2 {
			return nil, fmt.Errorf("C %v has rank above 2", c)
		}
		full := [2]int64{m, n}
		for i, d := range c {
			want := full[2-len(c)+i]
			if d != 1 && d >= 0 && want >= 0 && d != want {
				return nil, fmt.Errorf("C %v does not broadcast to [%d %d]", c, m, n)
			}
		}
	}
	return append(dst, m, n), nil
}

func (o *gemmOp) prepare(in []*value) {
	b := in[1]
	if !b.isConst {
		return
	}
	if o.transB {
		o.packedB = b.data
		return
	}
	k, n := int(b.shape[0]), int(b.shape[1])
	o.packedB = make([]float32, n*k)
	transpose(o.packedB, b.data, k, n)
}

func (o *gemmOp) run(s *Session, in []*value, out *value) {
	m, n := int(out.shape[0]), int(out.shape[1])
	k := int(in[0].shape[1])
	a := in[0].data
	if o.transA {
		k = int(in[0].shape[0])
		a = grow(&s.scratchA, m*k)
		transpose(a, in[0].data, k, m)
	}
	b := o.packedB
	if b == nil {
		b = in[1].data
		if !o.transB {
			b = grow(&s.scratchB, n*k)
			transpose(b, in[1].data, k, n)
		}
	}
	y := out.data
	s.sgemm(m, n, k, a, k, b, k, y, n)
	if o.alpha != 1 {
		for i := range y {
			y[i] *= o.alpha
		}
	}
	if len(in) < 3 || in[2] == nil || o.beta == 0 {
		return
	}
	cv := in[2]
	c := cv.data
	cm, cn := 1, 1
	switch len(cv.shape) {
	case 1:
		cn = int(cv.shape[0])
	case 2:
		cm, cn = int(cv.shape[0]), int(cv.shape[1])
	}
	rowStride, colStride := 0, 0
	if cm != 1 {
		rowStride = cn
	}
	if cn != 1 {
		colStride = 1
	}
	beta := o.beta
	for i := 0; i < m; i++ {
		yr := y[i*n : i*n+n]
		cr := c[i*rowStride:]
		if colStride == 1 {
			cr = cr[:n]
			if beta == 1 {
				for j := range yr {
					yr[j] += cr[j]
				}
			} else {
				for j := range yr {
					yr[j] += beta * cr[j]
				}
			}
		} else {
			v := beta * cr[0]
			for j := range yr {
				yr[j] += v
			}
		}
	}
}

// matMulOp is ONNX MatMul for A of rank ≥ 2 ([..., M, K], leading dims
// flattened) and a matrix B [K, N].
type matMulOp struct {
	packedB []float32 // a constant B as n×k; nil when B is dynamic
}

func (o *matMulOp) infer(dst []int64, in []*value) ([]int64, error) {
	a, b := in[0].shape, in[1].shape
	if len(a) < 2 || len(b) != 2 {
		return nil, fmt.Errorf("A %v must have rank 2 or more and B %v rank 2", a, b)
	}
	k := a[len(a)-1]
	if k >= 0 && b[0] >= 0 && k != b[0] {
		return nil, fmt.Errorf("A %v and B %v do not match", a, b)
	}
	dst = append(dst, a[:len(a)-1]...)
	return append(dst, b[1]), nil
}

func (o *matMulOp) prepare(in []*value) {
	if b := in[1]; b.isConst {
		k, n := int(b.shape[0]), int(b.shape[1])
		o.packedB = make([]float32, n*k)
		transpose(o.packedB, b.data, k, n)
	}
}

func (o *matMulOp) run(s *Session, in []*value, out *value) {
	k, n := int(in[1].shape[0]), int(in[1].shape[1])
	m := len(out.data) / max(n, 1)
	if n == 0 {
		return
	}
	b := o.packedB
	if b == nil {
		b = grow(&s.scratchB, n*k)
		transpose(b, in[1].data, k, n)
	}
	s.sgemm(m, n, k, in[0].data, k, b, k, out.data, n)
}

// binaryOp is an elementwise Add, Sub, Mul or Div with multidirectional
// (numpy) broadcasting.
type binaryOp struct {
	kind byte // 'A', 'S', 'M', 'D'
	// Scratch for the general broadcast, sized on first use.
	strideA, strideB, idx []int
}

func (o *binaryOp) infer(dst []int64, in []*value) ([]int64, error) {
	a, b := in[0].shape, in[1].shape
	r := max(len(a), len(b))
	for i := 0; i < r; i++ {
		da, db := int64(1), int64(1)
		if j := len(a) - r + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - r + i; j >= 0 {
			db = b[j]
		}
		var d int64
		switch {
		case da == db:
			d = da
		case da == 1:
			d = db
		case db == 1:
			d = da
		case da < 0:
			d = db
		case db < 0:
			d = da
		default:
			return nil, fmt.Errorf("shapes %v and %v do not broadcast", a, b)
		}
		dst = append(dst, d)
	}
	return dst, nil
}

func (o *binaryOp) run(s *Session, in []*value, out *value) {
	a, b, y := in[0].data, in[1].data, out.data
	if len(y) == 0 {
		return
	}
	as, bs, ys := in[0].shape, in[1].shape, out.shape
	if slices.Equal(as, ys) && slices.Equal(bs, ys) {
		o.apply(y, a, 1, b, 1)
		return
	}
	// a full, b a row along the last axis (or the reverse): a bias.
	if last := ys[len(ys)-1]; int64(len(b)) == last && len(bs) > 0 && bs[len(bs)-1] == last && slices.Equal(as, ys) {
		n := int(last)
		for i := 0; i < len(y); i += n {
			o.apply(y[i:i+n], a[i:i+n], 1, b, 1)
		}
		return
	}
	o.general(in[0], in[1], out)
}

// general handles any broadcast: it walks the output row by row (rows of
// the last axis) with an odometer over the leading axes.
func (o *binaryOp) general(av, bv, out *value) {
	dims := out.shape
	r := len(dims)
	if r == 0 {
		o.apply(out.data, av.data, 0, bv.data, 0)
		return
	}
	if len(o.idx) < r {
		o.strideA, o.strideB, o.idx = make([]int, r), make([]int, r), make([]int, r)
	}
	strides := func(shape []int64, st []int) {
		acc := 1
		for i := r - 1; i >= 0; i-- {
			j := len(shape) - r + i
			d := int64(1)
			if j >= 0 {
				d = shape[j]
			}
			if d == 1 {
				st[i] = 0
			} else {
				st[i] = acc
			}
			acc *= int(d)
		}
	}
	sa, sb, idx := o.strideA[:r], o.strideB[:r], o.idx[:r]
	strides(av.shape, sa)
	strides(bv.shape, sb)
	clear(idx)
	n := int(dims[r-1])
	offA, offB := 0, 0
	y := out.data
	for row := 0; row < len(y); row += n {
		o.apply(y[row:row+n], av.data[offA:], sa[r-1], bv.data[offB:], sb[r-1])
		for d := r - 2; d >= 0; d-- {
			idx[d]++
			offA += sa[d]
			offB += sb[d]
			if idx[d] < int(dims[d]) {
				break
			}
			offA -= sa[d] * int(dims[d])
			offB -= sb[d] * int(dims[d])
			idx[d] = 0
		}
	}
}

// apply sets y[j] = a[j·sa] op b[j·sb].
func (o *binaryOp) apply(y, a []float32, sa int, b []float32, sb int) {
	if sa == 1 && sb == 1 {
		a, b = a[:len(y)], b[:len(y)]
		switch o.kind {
		case 'A':
			for j := range y {
				y[j] = a[j] + b[j]
			}
		case 'S':
			for j := range y {
				y[j] = a[j] - b[j]
			}
		case 'M':
			for j := range y {
				y[j] = a[j] * b[j]
			}
		case 'D':
			for j := range y {
				y[j] = a[j] / b[j]
			}
		}
		return
	}
	for j := range y {
		x, z := a[j*sa], b[j*sb]
		switch o.kind {
		case 'A':
			y[j] = x + z
		case 'S':
			y[j] = x - z
		case 'M':
			y[j] = x * z
		case 'D':
			y[j] = x / z
		}
	}
}

// unaryOp is Relu, Sigmoid or Identity.
type unaryOp struct {
	kind byte // 'R', 'S', 'I'
}

func (o *unaryOp) infer(dst []int64, in []*value) ([]int64, error) {
	return append(dst, in[0].shape...), nil
}

func (o *unaryOp) run(s *Session, in []*value, out *value) {
	x, y := in[0].data, out.data
	x = x[:len(y)]
	switch o.kind {
	case 'R':
		for i, v := range x {
			if v < 0 {
				v = 0
			}
			y[i] = v
		}
	case 'S':
		for i, v := range x {
			y[i] = float32(1 / (1 + math.Exp(-float64(v))))
		}
	default:
		copy(y, x)
	}
}

// softmaxOp is Softmax along the last axis.
type softmaxOp struct {
	axis int64
}

func (o *softmaxOp) infer(dst []int64, in []*value) ([]int64, error) {
	x := in[0].shape
	r := int64(len(x))
	axis := o.axis
	if axis < 0 {
		axis += r
	}
	if r == 0 || axis != r-1 {
		return nil, fmt.Errorf("softmax over axis %d of a rank %d tensor is not supported (only the last axis)", o.axis, r)
	}
	return append(dst, x...), nil
}

func (o *softmaxOp) run(s *Session, in []*value, out *value) {
	n := int(out.shape[len(out.shape)-1])
	if n == 0 {
		return
	}
	x, y := in[0].data, out.data
	for i := 0; i < len(y); i += n {
		xr, yr := x[i:i+n], y[i:i+n]
		mx := xr[0]
		for _, v := range xr {
			if v > mx {
				mx = v
			}
		}
		var sum float64
		for j, v := range xr {
			e := math.Exp(float64(v - mx))
			yr[j] = float32(e)
			sum += e
		}
		inv := 1 / sum
		for j := range yr {
			yr[j] = float32(float64(yr[j]) * inv)
		}
	}
}

// flattenOp is Flatten: [d0..dn] to [d0·…·d(axis-1), d(axis)·…·dn].
type flattenOp struct {
	axis int64
}

func (o *flattenOp) infer(dst []int64, in []*value) ([]int64, error) {
	x := in[0].shape
	axis := o.axis
	if axis < 0 {
		axis += int64(len(x))
	}
	if axis < 0 || axis > int64(len(x)) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", o.axis, len(x))
	}
	return append(dst, mulDims(x[:axis]), mulDims(x[axis:])), nil
}

func (o *flattenOp) run(s *Session, in []*value, out *value) {
	copy(out.data, in[0].data)
}

func decodeFloat32s(dst []float32, b []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

func encodeFloat32s(dst []byte, f []float32) {
	for i, v := range f {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}
