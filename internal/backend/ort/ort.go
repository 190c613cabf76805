//go:build cgo

package ort

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
)

var _ backend.Runtime = (*Runtime)(nil)

// Runtime opens ONNX models with ONNX Runtime. All Runtimes of a process
// share one ONNX Runtime environment, created by the first successful New.
type Runtime struct {
	libPath string
	version string
}

// env is the process-wide ONNX Runtime environment. onnxruntime_go keeps it in
// package globals, so it can be initialised once, from one library.
var env struct {
	mu      sync.Mutex
	libPath string // absolute path of the loaded library; "" until loaded
	version string
}

// New loads the ONNX Runtime shared library at libPath and initialises the
// process-wide environment. Later calls with the same library reuse it; a
// different library is an error (a process can load only one).
func New(libPath string) (*Runtime, error) {
	if libPath == "" {
		return nil, infergate.Errorf(infergate.EInvalid, "onnxruntime: no shared library path")
	}
	abs, err := filepath.Abs(libPath)
	if err != nil {
		return nil, infergate.Errorf(infergate.EInvalid, "onnxruntime: library path %q: %v", libPath, err)
	}
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.libPath != "" {
		if !sameFile(env.libPath, abs) {
			return nil, infergate.Errorf(infergate.EConflict,
				"onnxruntime: already initialised from %s, cannot also load %s", env.libPath, abs)
		}
		return &Runtime{libPath: env.libPath, version: env.version}, nil
	}
	if ortgo.IsInitialized() {
		return nil, infergate.Errorf(infergate.EConflict,
			"onnxruntime: environment was initialised outside package ort")
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, &infergate.Error{Code: infergate.ENotFound,
			Message: fmt.Sprintf("onnxruntime: shared library %s not found", abs), Err: err}
	}
	ortgo.SetSharedLibraryPath(abs)
	if err := ortgo.InitializeEnvironment(); err != nil {
		return nil, ortError("loading shared library "+abs, err)
	}
	env.libPath = abs
	env.version = ortgo.GetVersion()
	return &Runtime{libPath: abs, version: env.version}, nil
}

func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// Name is "onnxruntime".
func (*Runtime) Name() string { return "onnxruntime" }

// Version is the ONNX Runtime version the library reports, e.g. "1.30.0".
func (r *Runtime) Version() string { return r.version }

// LibraryPath is the absolute path of the loaded shared library.
func (r *Runtime) LibraryPath() string { return r.libPath }

// Open loads the model at path into a new session. opts.Threads sets the
// intra-op thread count (0: ONNX Runtime's default, one per physical core).
// Inter-op parallelism is off, graph optimisations are all on, and idle
// worker threads do not spin: spinning would take CPU from request handling.
func (r *Runtime) Open(path string, opts backend.Options) (backend.Session, error) {
	if opts.Threads < 0 {
		return nil, infergate.Errorf(infergate.EInvalid, "onnxruntime: threads must be >= 0, got %d", opts.Threads)
	}
	if st, err := os.Stat(path); err != nil {
		return nil, &infergate.Error{Code: infergate.ENotFound,
			Message: fmt.Sprintf("onnxruntime: model file %s not found", path), Err: err}
	} else if st.IsDir() {
		return nil, infergate.Errorf(infergate.EInvalid, "onnxruntime: model path %s is a directory", path)
	}

	ins, outs, err := readInfo(path)
	if err != nil {
		return nil, err
	}
	s := &session{}
	inNames := make([]string, len(ins))
	for i, info := range ins {
		spec, err := tensorSpec(info, "input")
		if err != nil {
			return nil, err
		}
		s.inputs = append(s.inputs, spec)
		s.inTypes = append(s.inTypes, info.DataType)
		inNames[i] = info.Name
	}
	outNames := make([]string, len(outs))
	for i, info := range outs {
		spec, err := tensorSpec(info, "output")
		if err != nil {
			return nil, err
		}
		// onnxruntime_go copies outputs it allocates into typed Go slices;
		// for element types without a Go type (FP16) it copies one byte per
		// element, losing data. Such outputs are allocated here instead,
		// which needs their shape up front.
		prealloc := !hasGoType(info.DataType)
		if prealloc && !static(spec.Shape) {
			return nil, infergate.Errorf(infergate.EUnprocess,
				"onnxruntime: output %q of type %s needs a static shape, has %v", spec.Name, spec.DataType, spec.Shape)
		}
		s.outputs = append(s.outputs, spec)
		s.outTypes = append(s.outTypes, info.DataType)
		s.outPrealloc = append(s.outPrealloc, prealloc)
		outNames[i] = info.Name
	}

	so, err := sessionOptions(opts.Threads, ortgo.GraphOptimizationLevelEnableAll)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	s.sess, err = ortgo.NewDynamicAdvancedSession(path, inNames, outNames, so)
	if err != nil {
		return nil, ortError("loading model "+path, err)
	}
	s.runOpts, err = ortgo.NewRunOptions()
	if err != nil {
		s.sess.Destroy()
		return nil, ortError("creating run options", err)
	}
	return s, nil
}

// readInfo reads the model's input and output descriptions. onnxruntime_go
// only offers this through a temporary session; it is made cheap by turning
// optimisations off and using the calling thread only.
func readInfo(path string) (ins, outs []ortgo.InputOutputInfo, err error) {
	so, err := sessionOptions(1, ortgo.GraphOptimizationLevelDisableAll)
	if err != nil {
		return nil, nil, err
	}
	defer so.Destroy()
	ins, outs, err = ortgo.GetInputOutputInfoWithOptions(path, so)
	if err != nil {
		return nil, nil, ortError("loading model "+path, err)
	}
	return ins, outs, nil
}

func sessionOptions(threads int, level ortgo.GraphOptimizationLevel) (*ortgo.SessionOptions, error) {
	so, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, ortError("creating session options", err)
	}
	set := func(what string, err error) error {
		if err != nil {
			return ortError("setting "+what, err)
		}
		return nil
	}
	err = errors.Join(
		set("graph optimization level", so.SetGraphOptimizationLevel(level)),
		set("inter-op threads", so.SetInterOpNumThreads(1)),
		set("intra-op spinning", so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0")),
		set("inter-op spinning", so.AddSessionConfigEntry("session.inter_op.allow_spinning", "0")),
	)
	if err == nil && threads > 0 {
		err = set("intra-op threads", so.SetIntraOpNumThreads(threads))
	}
	if err != nil {
		so.Destroy()
		return nil, err
	}
	return so, nil
}

// dataTypes maps ONNX element types to infergate types. Types missing here
// (strings, bfloat16, complex, float8, int4) are not served.
var dataTypes = map[ortgo.TensorElementDataType]infergate.DataType{
	ortgo.TensorElementDataTypeBool:    infergate.BOOL,
	ortgo.TensorElementDataTypeUint8:   infergate.UINT8,
	ortgo.TensorElementDataTypeUint16:  infergate.UINT16,
	ortgo.TensorElementDataTypeUint32:  infergate.UINT32,
	ortgo.TensorElementDataTypeUint64:  infergate.UINT64,
	ortgo.TensorElementDataTypeInt8:    infergate.INT8,
	ortgo.TensorElementDataTypeInt16:   infergate.INT16,
	ortgo.TensorElementDataTypeInt32:   infergate.INT32,
	ortgo.TensorElementDataTypeInt64:   infergate.INT64,
	ortgo.TensorElementDataTypeFloat16: infergate.FP16,
	ortgo.TensorElementDataTypeFloat:   infergate.FP32,
	ortgo.TensorElementDataTypeDouble:  infergate.FP64,
}

// hasGoType reports whether onnxruntime_go returns outputs of type t as a
// typed *Tensor[T] (and so copies them correctly).
func hasGoType(t ortgo.TensorElementDataType) bool {
	return t != ortgo.TensorElementDataTypeFloat16
}

func tensorSpec(info ortgo.InputOutputInfo, kind string) (infergate.TensorSpec, error) {
	if info.OrtValueType != ortgo.ONNXTypeTensor {
		return infergate.TensorSpec{}, infergate.Errorf(infergate.EUnprocess,
			"onnxruntime: %s %q is a %v, only dense tensors are supported", kind, info.Name, info.OrtValueType)
	}
	dt, ok := dataTypes[info.DataType]
	if !ok {
		return infergate.TensorSpec{}, infergate.Errorf(infergate.EUnprocess,
			"onnxruntime: %s %q has unsupported element type %v", kind, info.Name, info.DataType)
	}
	shape := make([]int64, len(info.Dimensions))
	for i, d := range info.Dimensions {
		if d < 0 {
			d = -1 // symbolic or unknown
		}
		shape[i] = d
	}
	return infergate.TensorSpec{Name: info.Name, DataType: dt, Shape: shape}, nil
}

func static(shape []int64) bool {
	if len(shape) == 0 {
		return false
	}
	for _, d := range shape {
		if d < 0 {
			return false
		}
	}
	return true
}

// session is one ONNX Runtime session. mu serialises Run and Close, so Close
// waits for a running batch and a closed session fails cleanly.
type session struct {
	mu          sync.Mutex
	sess        *ortgo.DynamicAdvancedSession
	runOpts     *ortgo.RunOptions
	inputs      []infergate.TensorSpec
	outputs     []infergate.TensorSpec
	inTypes     []ortgo.TensorElementDataType
	outTypes    []ortgo.TensorElementDataType
	outPrealloc []bool
}

func (s *session) Inputs() []infergate.TensorSpec  { return cloneSpecs(s.inputs) }
func (s *session) Outputs() []infergate.TensorSpec { return cloneSpecs(s.outputs) }

func cloneSpecs(specs []infergate.TensorSpec) []infergate.TensorSpec {
	out := make([]infergate.TensorSpec, len(specs))
	for i, sp := range specs {
		out[i] = sp
		out[i].Shape = append([]int64(nil), sp.Shape...)
	}
	return out
}

// Close destroys the session. It is safe to call more than once.
func (s *session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return nil
	}
	err := s.sess.Destroy()
	s.runOpts.Destroy()
	s.sess, s.runOpts = nil, nil
	if err != nil {
		return ortError("destroying session", err)
	}
	return nil
}

// Run executes one batch. Inputs are handed to ONNX Runtime without copying
// (unless misaligned for their element type); outputs are allocated by ONNX
// Runtime, copied once into Go memory by onnxruntime_go, and returned as raw
// bytes without a further copy. Cancelling ctx stops a running batch.
func (s *session) Run(ctx context.Context, inputs []infergate.Tensor) (out []infergate.Tensor, err error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxError(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return nil, infergate.Errorf(infergate.EUnavailable, "onnxruntime: session is closed")
	}
	if len(inputs) != len(s.inputs) {
		return nil, infergate.Errorf(infergate.EInvalid, "onnxruntime: got %d inputs, model has %d", len(inputs), len(s.inputs))
	}

	values := make([]ortgo.Value, len(inputs)+len(s.outputs))
	defer func() {
		for _, v := range values {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	inVals, outVals := values[:len(inputs)], values[len(inputs):]
	for i := range inputs {
		if inVals[i], err = s.inputValue(i, &inputs[i]); err != nil {
			return nil, err
		}
	}
	for i, pre := range s.outPrealloc {
		if !pre {
			continue // nil: ONNX Runtime allocates it
		}
		spec := s.outputs[i]
		buf := alignedBytes(int(infergate.NumElements(spec.Shape)) * spec.DataType.Size())
		if outVals[i], err = ortgo.NewCustomDataTensor(ortgo.Shape(spec.Shape), buf, s.outTypes[i]); err != nil {
			return nil, ortError(fmt.Sprintf("allocating output %q", spec.Name), err)
		}
	}

	if err := s.run(ctx, inVals, outVals); err != nil {
		return nil, err
	}

	out = make([]infergate.Tensor, len(outVals))
	for i, v := range outVals {
		spec := s.outputs[i]
		if v == nil {
			return nil, infergate.Errorf(infergate.EInternal, "onnxruntime: output %q missing", spec.Name)
		}
		data, err := valueBytes(v)
		if err != nil {
			return nil, infergate.Errorf(infergate.EInternal, "onnxruntime: output %q: %v", spec.Name, err)
		}
		shape := []int64(v.GetShape())
		if want := infergate.NumElements(shape) * int64(spec.DataType.Size()); int64(len(data)) != want {
			return nil, infergate.Errorf(infergate.EInternal,
				"onnxruntime: output %q has %d bytes, shape %v needs %d", spec.Name, len(data), shape, want)
		}
		out[i] = infergate.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: shape, Data: data}
	}
	return out, nil
}

// run calls ONNX Runtime, terminating the run if ctx ends meanwhile.
func (s *session) run(ctx context.Context, in, out []ortgo.Value) error {
	var err error
	if ctx.Done() == nil {
		err = s.sess.RunWithOptions(in, out, s.runOpts)
	} else {
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			defer close(fired)
			s.runOpts.Terminate()
		})
		err = s.sess.RunWithOptions(in, out, s.runOpts)
		if !stop() {
			// The terminate flag was (or is being) set: wait, then clear it
			// so the next run on this session is not cut short.
			<-fired
			s.runOpts.UnsetTerminate()
		}
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return ctxError(cerr)
		}
		return ortError("run", err)
	}
	return nil
}

// inputValue wraps inputs[i]'s bytes in an ONNX Runtime tensor.
func (s *session) inputValue(i int, t *infergate.Tensor) (ortgo.Value, error) {
	spec := s.inputs[i]
	if t.DataType != spec.DataType {
		return nil, infergate.Errorf(infergate.EInvalid, "onnxruntime: input %q has type %s, model wants %s", spec.Name, t.DataType, spec.DataType)
	}
	if len(t.Shape) == 0 {
		return nil, infergate.Errorf(infergate.EUnprocess, "onnxruntime: input %q: scalar inputs are not supported", spec.Name)
	}
	n := t.NumElements()
	size := spec.DataType.Size()
	if n < 0 || int64(len(t.Data)) != n*int64(size) {
		return nil, infergate.Errorf(infergate.EInvalid, "onnxruntime: input %q has %d bytes, shape %v needs %d", spec.Name, len(t.Data), t.Shape, n*int64(size))
	}
	data := t.Data
	switch {
	case len(data) == 0:
		// Zero-element tensor: onnxruntime_go wants at least one byte.
		data = alignedBytes(size)
	case uintptr(unsafe.Pointer(&data[0]))%uintptr(size) != 0:
		// Kernels may assume natural alignment; copy misaligned data.
		data = alignedBytes(len(t.Data))
		copy(data, t.Data)
	}
	v, err := ortgo.NewCustomDataTensor(ortgo.Shape(t.Shape), data, s.inTypes[i])
	if err != nil {
		return nil, ortError(fmt.Sprintf("input %q", spec.Name), err)
	}
	return v, nil
}

// alignedBytes returns n zero bytes aligned to 8.
func alignedBytes(n int) []byte {
	if n == 0 {
		return []byte{}
	}
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
}

// valueBytes returns the raw bytes of an output. For tensors onnxruntime_go
// allocated, the Go slice behind them is already a private copy of ONNX
// Runtime's buffer (made in createTensorFromOrtValue; it outlives Destroy,
// which only releases the OrtValue), so it is reinterpreted, not copied.
func valueBytes(v ortgo.Value) ([]byte, error) {
	switch t := v.(type) {
	case *ortgo.Tensor[float32]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[float64]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[int8]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[int16]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[int32]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[int64]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[uint8]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[uint16]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[uint32]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[uint64]:
		return asBytes(t.GetData()), nil
	case *ortgo.Tensor[bool]:
		return asBytes(t.GetData()), nil
	case *ortgo.CustomDataTensor:
		// Only ever the buffers Run preallocated: fresh and owned here.
		return t.GetData(), nil
	}
	return nil, fmt.Errorf("unsupported value %T (ONNX type %v)", v, v.GetONNXType())
}

// asBytes views s as its little-endian bytes (all supported platforms are
// little-endian).
func asBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return []byte{}
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(zero)))
}

func ortError(what string, err error) error {
	// The message carries ORT's text; Err stays nil so Error() does not
	// repeat it.
	return infergate.Errorf(infergate.EInternal, "onnxruntime: %s: %v", what, err)
}

func ctxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &infergate.Error{Code: infergate.EDeadline, Message: "deadline passed before the batch finished", Err: err}
	}
	return &infergate.Error{Code: infergate.ECanceled, Message: "batch canceled", Err: err}
}
