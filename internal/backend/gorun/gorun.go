// Package gorun is infergate's pure-Go model runtime: no cgo and nothing to
// download, the fallback when ONNX Runtime cannot be loaded.
//
// It executes FP32 ONNX graphs made of MatMul, Gemm, Add, Sub, Mul, Div,
// Relu, Sigmoid, Softmax (last axis), Flatten and Identity, which covers
// MLPs exported from PyTorch. Open rejects any other operator, and
// non-FP32 inputs or outputs, with an EUnprocess error.
//
// Open decodes the model, checks every node's shapes with the dynamic
// dimensions unknown, transposes constant weights into the layout the GEMM
// kernel wants and assigns intermediate values to reusable buffers. Run then
// only computes: after the first call at a given batch size it allocates
// nothing but its outputs.
package gorun

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"unsafe"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/onnx"
)

// Runtime opens ONNX models for pure-Go execution.
type Runtime struct {
	// GEMM multiplies matrices; nil means DefaultGEMM.
	GEMM GEMM
}

// DefaultGEMM is the GEMM New uses. Gonum (SSE assembly dot products)
// measured faster than the pure-Go Tiled kernel at every batch size of the
// reference MLP; see BenchmarkSgemm and BenchmarkReferenceMLP.
var DefaultGEMM GEMM = Gonum{}

var (
	_ backend.Runtime = (*Runtime)(nil)
	_ backend.Session = (*Session)(nil)
)

// New returns a Runtime using DefaultGEMM.
func New() *Runtime { return &Runtime{GEMM: DefaultGEMM} }

// Name implements backend.Runtime.
func (r *Runtime) Name() string { return "gorun" }

// Open implements backend.Runtime: it reads and decodes the ONNX file at
// path and plans its execution.
func (r *Runtime) Open(path string, opts backend.Options) (backend.Session, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			e := infergate.Errorf(infergate.ENotFound, "model file %s not found", path)
			e.Err = err
			return nil, e
		}
		e := infergate.Errorf(infergate.EInternal, "reading model file %s", path)
		e.Err = err
		return nil, e
	}
	m, err := onnx.Decode(data)
	if err != nil {
		e := infergate.Errorf(infergate.EInvalid, "%s is not a valid ONNX model", path)
		e.Err = err
		return nil, e
	}
	return r.OpenModel(m, opts)
}

// OpenModel plans the execution of a decoded model.
func (r *Runtime) OpenModel(m *onnx.Model, opts backend.Options) (*Session, error) {
	g := r.GEMM
	if g == nil {
		g = DefaultGEMM
	}
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	s, err := plan(m)
	if err != nil {
		return nil, err
	}
	s.gemm = g
	s.threads = threads
	if threads > 1 {
		s.pool = newPool(threads - 1)
		// Stop the workers of a session that is dropped without Close.
		runtime.AddCleanup(s, func(p *pool) { p.close() }, s.pool)
	}
	return s, nil
}

// Session is one planned model. It runs one batch at a time.
type Session struct {
	inputs, outputs []infergate.TensorSpec
	inVals, outVals []*value
	steps           []step
	slots           [][]float32 // reusable buffers of intermediate values
	scratchA        []float32   // transposed A of a Gemm with transA
	scratchB        []float32   // transposed B of a product with a dynamic B
	inScratch       [][]float32 // copies of misaligned inputs

	gemm    GEMM
	threads int
	pool    *pool
	closed  bool
}

// Inputs implements backend.Session.
func (s *Session) Inputs() []infergate.TensorSpec { return s.inputs }

// Outputs implements backend.Session.
func (s *Session) Outputs() []infergate.TensorSpec { return s.outputs }

// Close implements backend.Session. It stops the session's workers and
// drops its buffers.
func (s *Session) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.pool != nil {
		s.pool.close()
	}
	s.slots, s.scratchA, s.scratchB, s.inScratch = nil, nil, nil, nil
	return nil
}

// Run implements backend.Session. Inputs must be FP32 tensors in the order
// of Inputs(); Run checks their shapes against the model (the caller has
// normally done so) and returns EInvalid on a mismatch.
//
// Input bytes are used in place as []float32 when the host is little-endian
// and the data is 4-byte aligned (the usual case); otherwise they are
// decoded into a per-session buffer, so results are correct on any host.
func (s *Session) Run(ctx context.Context, inputs []infergate.Tensor) ([]infergate.Tensor, error) {
	if s.closed {
		return nil, infergate.Errorf(infergate.EUnavailable, "session is closed")
	}
	if len(inputs) != len(s.inVals) {
		return nil, infergate.Errorf(infergate.EInvalid, "got %d inputs, model has %d", len(inputs), len(s.inVals))
	}
	// Inputs are the caller's: drop the references when done.
	defer s.releaseInputs()
	for i := range inputs {
		if err := s.bindInput(i, &inputs[i]); err != nil {
			return nil, err
		}
	}
	for i := range s.steps {
		if err := ctx.Err(); err != nil {
			return nil, ctxError(err)
		}
		st := &s.steps[i]
		shape, err := st.op.infer(st.out.shape[:0], st.in)
		if err != nil {
			return nil, infergate.Errorf(infergate.EInvalid, "node %s (%s): %v", st.name, st.opType, err)
		}
		st.out.shape = shape
		n := int(infergate.NumElements(shape))
		if cap(s.slots[st.out.slot]) < n {
			s.slots[st.out.slot] = make([]float32, n)
		}
		st.out.data = s.slots[st.out.slot][:n]
		st.op.run(s, st.in, st.out)
	}
	out := make([]infergate.Tensor, len(s.outVals))
	for i, v := range s.outVals {
		out[i] = infergate.Tensor{
			Name:     s.outputs[i].Name,
			DataType: infergate.FP32,
			Shape:    append([]int64(nil), v.shape...),
			Data:     float32sToBytes(v.data),
		}
	}
	return out, nil
}

func (s *Session) releaseInputs() {
	for _, v := range s.inVals {
		v.data = nil
	}
}

func ctxError(err error) error {
	code := infergate.ECanceled
	if errors.Is(err, context.DeadlineExceeded) {
		code = infergate.EDeadline
	}
	e := infergate.Errorf(code, "run interrupted")
	e.Err = err
	return e
}

func (s *Session) bindInput(i int, t *infergate.Tensor) error {
	spec := &s.inputs[i]
	v := s.inVals[i]
	if t.DataType != infergate.FP32 {
		return infergate.Errorf(infergate.EInvalid, "input %s: got %s, want FP32", spec.Name, t.DataType)
	}
	if len(t.Shape) != len(spec.Shape) {
		return infergate.Errorf(infergate.EInvalid, "input %s: got shape %v, want %v", spec.Name, t.Shape, spec.Shape)
	}
	for d, dim := range t.Shape {
		if dim < 0 || (spec.Shape[d] >= 0 && dim != spec.Shape[d]) {
			return infergate.Errorf(infergate.EInvalid, "input %s: got shape %v, want %v", spec.Name, t.Shape, spec.Shape)
		}
	}
	n := infergate.NumElements(t.Shape)
	if int64(len(t.Data)) != 4*n {
		return infergate.Errorf(infergate.EInvalid, "input %s: %d bytes for shape %v, want %d", spec.Name, len(t.Data), t.Shape, 4*n)
	}
	v.shape = append(v.shape[:0], t.Shape...)
	v.data = bytesToFloat32s(t.Data, &s.inScratch[i])
	return nil
}

// littleEndian reports whether the host stores numbers little-endian, in
// which case a float32's bytes in memory are its wire bytes.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// bytesToFloat32s views b as float32s when it can, or decodes it into
// *scratch.
func bytesToFloat32s(b []byte, scratch *[]float32) []float32 {
	n := len(b) / 4
	if n == 0 {
		return []float32{}
	}
	if littleEndian && uintptr(unsafe.Pointer(&b[0]))%unsafe.Alignof(float32(0)) == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)
	}
	if cap(*scratch) < n {
		*scratch = make([]float32, n)
	}
	f := (*scratch)[:n]
	decodeFloat32s(f, b)
	return f
}

// float32sToBytes returns a new little-endian copy of f.
func float32sToBytes(f []float32) []byte {
	b := make([]byte, 4*len(f))
	if len(f) == 0 {
		return b
	}
	if littleEndian {
		copy(b, unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f)))
		return b
	}
	encodeFloat32s(b, f)
	return b
}

func (s *Session) String() string {
	return fmt.Sprintf("gorun session: %d inputs, %d outputs, %d steps, %d buffers", len(s.inputs), len(s.outputs), len(s.steps), len(s.slots))
}
