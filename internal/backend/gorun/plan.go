package gorun

import (
	"fmt"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/onnx"
)

// value is a tensor of the graph: a graph input, a constant or an
// intermediate result.
type value struct {
	name    string
	shape   []int64 // current dims; at plan time -1 marks an unknown one
	data    []float32
	slot    int // index of the buffer holding an intermediate, or -1
	isConst bool
}

// step is one node of the graph, ready to run.
type step struct {
	name, opType string
	op           op
	in           []*value // nil entries are omitted optional inputs
	out          *value
}

// op is an operator implementation.
type op interface {
	// infer appends the output's shape to dst and returns it. At plan time
	// input dims may be -1 (unknown) and the output may have unknown dims;
	// at run time every dim is known. infer checks what it can.
	infer(dst []int64, in []*value) ([]int64, error)
	// run computes out.data (already sized) from the inputs.
	run(s *Session, in []*value, out *value)
}

// preparer is implemented by ops that precompute something from constant
// inputs once the plan-time shapes are known.
type preparer interface {
	prepare(in []*value)
}

// plan builds an unstarted session for m: it resolves the graph's values,
// builds an op per node, infers shapes with unknown dynamic dims and
// assigns intermediate values to buffers.
func plan(m *onnx.Model) (*Session, error) {
	g := &m.Graph
	s := &Session{}
	vals := make(map[string]*value)
	unprocessable := func(format string, args ...any) error {
		return infergate.Errorf(infergate.EUnprocess, format, args...)
	}

	for i := range g.Initializers {
		t := &g.Initializers[i]
		v := &value{name: t.Name, slot: -1, isConst: true, shape: append([]int64{}, t.Dims...)}
		if t.ElemType == onnx.Float {
			data, err := t.Float32s()
			if err != nil {
				return nil, unprocessable("initializer %q: %v", t.Name, err)
			}
			v.data = data
		}
		// Non-FP32 initializers stay without data; an op that reads one
		// fails below.
		vals[t.Name] = v
	}
	for i := range g.Inputs {
		vi := &g.Inputs[i]
		spec, err := specOf(vi, "input")
		if err != nil {
			return nil, err
		}
		s.inputs = append(s.inputs, spec)
		v := &value{name: vi.Name, slot: -1, shape: append([]int64{}, spec.Shape...)}
		vals[vi.Name] = v
		s.inVals = append(s.inVals, v)
	}
	s.inScratch = make([][]float32, len(s.inVals))

	for ni := range g.Nodes {
		n := &g.Nodes[ni]
		name := n.Name
		if name == "" {
			name = fmt.Sprintf("#%d", ni)
		}
		if n.Domain != "" && n.Domain != "ai.onnx" {
			return nil, unprocessable("node %s: operator %s of domain %q is not supported by gorun", name, n.OpType, n.Domain)
		}
		o, err := newOp(n, m.Opset(""))
		if err != nil {
			return nil, infergate.Errorf(infergate.EUnprocess, "node %s (%s): %v", name, n.OpType, err)
		}
		st := step{name: name, opType: n.OpType, op: o}
		for _, in := range n.Inputs {
			if in == "" {
				st.in = append(st.in, nil)
				continue
			}
			v, ok := vals[in]
			if !ok {
				return nil, unprocessable("node %s (%s): input %q is not produced before it is used", name, n.OpType, in)
			}
			if v.isConst && v.data == nil {
				return nil, unprocessable("node %s (%s): initializer %q is not FP32; gorun computes in FP32 only", name, n.OpType, in)
			}
			st.in = append(st.in, v)
		}
		outs := 0
		for _, o := range n.Outputs {
			if o != "" {
				outs++
			}
		}
		if len(n.Outputs) == 0 || n.Outputs[0] == "" || outs != 1 {
			return nil, unprocessable("node %s (%s): gorun supports exactly one output", name, n.OpType)
		}
		if _, dup := vals[n.Outputs[0]]; dup {
			return nil, unprocessable("node %s (%s): output %q is already defined", name, n.OpType, n.Outputs[0])
		}
		shape, err := o.infer(nil, st.in)
		if err != nil {
			return nil, unprocessable("node %s (%s): %v", name, n.OpType, err)
		}
		st.out = &value{name: n.Outputs[0], shape: shape}
		vals[st.out.name] = st.out
		s.steps = append(s.steps, st)
		if p, ok := o.(preparer); ok {
			p.prepare(st.in)
		}
	}

	isOutput := make(map[*value]bool)
	for i := range g.Outputs {
		vo := &g.Outputs[i]
		v, ok := vals[vo.Name]
		if !ok {
			return nil, unprocessable("graph output %q is not produced by the graph", vo.Name)
		}
		if vo.ElemType != onnx.Float {
			return nil, unprocessable("output %q is %v; gorun supports FP32 only", vo.Name, vo.ElemType)
		}
		spec := infergate.TensorSpec{Name: vo.Name, DataType: infergate.FP32}
		if vo.HasShape {
			if len(vo.Shape) != len(v.shape) {
				return nil, unprocessable("output %q: declared rank %d, computed %v", vo.Name, len(vo.Shape), v.shape)
			}
			for d, dim := range vo.Shape {
				if dim >= 0 && v.shape[d] >= 0 && dim != v.shape[d] {
					return nil, unprocessable("output %q: declared shape %v, computed %v", vo.Name, vo.Shape, v.shape)
				}
			}
			spec.Shape = append([]int64{}, vo.Shape...)
		} else {
			spec.Shape = append([]int64{}, v.shape...)
		}
		s.outputs = append(s.outputs, spec)
		s.outVals = append(s.outVals, v)
		isOutput[v] = true
	}
	if len(s.outputs) == 0 {
		return nil, unprocessable("model has no outputs")
	}
	s.assignSlots(isOutput)
	return s, nil
}

func specOf(vi *onnx.ValueInfo, what string) (infergate.TensorSpec, error) {
	if vi.ElemType != onnx.Float {
		return infergate.TensorSpec{}, infergate.Errorf(infergate.EUnprocess,
			"%s %q is %v; gorun supports FP32 only", what, vi.Name, vi.ElemType)
	}
	spec, err := vi.Spec()
	if err != nil {
		return infergate.TensorSpec{}, infergate.Errorf(infergate.EUnprocess, "%s %q: %v", what, vi.Name, err)
	}
	return spec, nil
}

// assignSlots gives every intermediate value a buffer, reusing the buffers
// of values that are no longer needed. A step's output never shares a
// buffer with its inputs; graph outputs keep theirs to the end.
func (s *Session) assignSlots(isOutput map[*value]bool) {
	lastUse := make(map[*value]int)
	for i, st := range s.steps {
		for _, v := range st.in {
			if v != nil {
				lastUse[v] = i
			}
		}
	}
	var free []int
	for i, st := range s.steps {
		if len(free) > 0 {
			st.out.slot = free[len(free)-1]
			free = free[:len(free)-1]
		} else {
			st.out.slot = len(s.slots)
			s.slots = append(s.slots, nil)
		}
		release := func(v *value) {
			if v.slot >= 0 && !isOutput[v] {
				free = append(free, v.slot)
			}
		}
		released := map[*value]bool{}
		for _, v := range st.in {
			if v != nil && !released[v] && lastUse[v] == i {
				released[v] = true
				release(v)
			}
		}
		if _, used := lastUse[st.out]; !used {
			release(st.out)
		}
	}
}
