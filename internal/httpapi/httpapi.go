// Package httpapi serves infergate over HTTP: the KServe Open Inference
// Protocol v2 (REST, with the binary tensor data extension), the cost
// report, the live latency profile and Prometheus metrics.
package httpapi

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/jobs"
	"github.com/infergate/infergate/internal/kserve"
)

// Engine is what the handlers need from the model engine.
type Engine interface {
	Model(name string) (*engine.Model, error)
	Models() []infergate.ModelInfo
	Ready() bool
	Ledger() *cost.Ledger
}

// Options configure the handlers.
type Options struct {
	// MaxBodyBytes caps request bodies (413 past it).
	MaxBodyBytes int64
	// Limits bound decoded tensors.
	Limits kserve.Limits
	// Version is reported by GET /v2.
	Version string

	// Jobs, when not nil, enables the OpenAI-compatible Files and Batches
	// routes (/v1/files, /v1/batches) over this store.
	Jobs jobs.Store
	// Notify, if not nil, is called after a batch is created or a cancel
	// is requested, to wake the batch runner.
	Notify func()
	// Rate, if not nil, reports a batch's recent processing rate in items
	// per second, for the batch object's "infergate" extension.
	Rate func(batchID string) (float64, bool)
	// Clock tells the time for estimated completion times (wall clock when
	// nil).
	Clock clock.Clock
	// MaxUploadBytes caps uploaded files (413 past it); 200 MiB when zero.
	MaxUploadBytes int64

	// Events, when not nil, serves GET /v1/events.
	Events EventLister
	// Modes, when not nil, returns a model's mode switcher (nil when the
	// model has none), for GET and POST /v1/models/{model}/modes.
	Modes func(model string) ModeController
	// Dashboard, when not nil, serves GET / and GET /v1/dashboard.
	Dashboard http.Handler
	// APIKeys, when not empty, are the keys every route but the health
	// checks requires (see authenticate); files and batches belong to the
	// key that made them.
	APIKeys []APIKey
}

// Server holds the handlers' dependencies.
type Server struct {
	eng  Engine
	opt  Options
	log  *slog.Logger
	gath prometheus.Gatherer
	bufs sync.Pool // *bytes.Buffer, request bodies
	// outBufs holds *[]byte response bodies.
	outBufs sync.Pool
	// planning is held by the one POST /v1/plan allowed at a time: a plan
	// simulates on the serving machine.
	planning sync.Mutex
	keys     keyring
}

// maxPooledBody is the largest request or response buffer kept for reuse,
// and the most a declared Content-Length pre-allocates.
const maxPooledBody = 1 << 20

// ClassHeader carries a request's class.
const ClassHeader = "X-Infergate-Class"

// ServerTimeHeader carries, on an inference response, the server's own time
// for the request in milliseconds: from the handler's start (the request
// line and headers read) to the response encoded, before it is written.
const ServerTimeHeader = "X-Infergate-Server-Ms"

// HeaderLength is the binary extension's JSON header length header.
const HeaderLength = "Inference-Header-Content-Length"

// New returns the server's HTTP handler.
func New(eng Engine, gath prometheus.Gatherer, opt Options, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opt.MaxBodyBytes == 0 {
		opt.MaxBodyBytes = 64 << 20
	}
	s := &Server{eng: eng, opt: opt, log: log, gath: gath, keys: newKeyring(opt.APIKeys)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]bool{"live": true}) })
	mux.HandleFunc("GET /v2/health/ready", s.ready)
	mux.HandleFunc("GET /v2", s.serverMetadata)
	mux.HandleFunc("GET /v2/models/{model}", s.modelMetadata)
	mux.HandleFunc("GET /v2/models/{model}/versions/{version}", s.modelMetadata)
	mux.HandleFunc("GET /v2/models/{model}/ready", s.modelReady)
	mux.HandleFunc("GET /v2/models/{model}/versions/{version}/ready", s.modelReady)
	mux.HandleFunc("POST /v2/models/{model}/infer", s.infer)
	mux.HandleFunc("POST /v2/models/{model}/versions/{version}/infer", s.infer)
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"models": eng.Models()})
	})
	mux.HandleFunc("GET /v1/models/{model}/profile", s.profile)
	mux.HandleFunc("POST /v1/plan", s.plan)
	mux.HandleFunc("GET /v1/cost", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, eng.Ledger().Report()) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(gath, promhttp.HandlerOpts{}))
	if opt.Jobs != nil {
		s.registerBatchRoutes(mux)
	}
	s.registerModeRoutes(mux)
	if opt.Dashboard != nil {
		mux.Handle("GET /{$}", opt.Dashboard)
		mux.Handle("GET /v1/dashboard", opt.Dashboard)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, log, infergate.Errorf(infergate.ENotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	return s.authenticate(s.refuseEncoded(mux))
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if r, ok := s.eng.(interface{ Readiness() (bool, string) }); ok {
		if ready, why := r.Readiness(); !ready {
			writeError(w, s.log, infergate.Errorf(infergate.EUnavailable, "not ready: %s", why))
			return
		}
	}
	if !s.eng.Ready() {
		writeError(w, s.log, infergate.Errorf(infergate.EUnavailable, "not ready"))
		return
	}
	writeJSON(w, 200, map[string]bool{"ready": true})
}

func (s *Server) serverMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, 200, map[string]any{
		"name": "infergate", "version": s.opt.Version,
		"extensions": []string{"binary_tensor_data", "schedule_policy", "model_repository"},
	})
}

// model looks up the path's model and version ("1" or empty).
func (s *Server) model(r *http.Request) (*engine.Model, error) {
	m, err := s.eng.Model(r.PathValue("model"))
	if err != nil {
		return nil, err
	}
	if v := r.PathValue("version"); v != "" && v != m.Info.Version {
		return nil, infergate.Errorf(infergate.ENotFound, "model %q has no version %q", m.Info.Name, v)
	}
	return m, nil
}

type tensorMeta struct {
	Name     string             `json:"name"`
	DataType infergate.DataType `json:"datatype"`
	Shape    []int64            `json:"shape"`
}

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	m, err := s.model(r)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	conv := func(specs []infergate.TensorSpec) []tensorMeta {
		out := make([]tensorMeta, len(specs))
		for i, t := range specs {
			out[i] = tensorMeta(t)
		}
		return out
	}
	writeJSON(w, 200, map[string]any{
		"name": m.Info.Name, "versions": []string{m.Info.Version}, "platform": m.Info.Platform,
		"inputs": conv(m.Info.Inputs), "outputs": conv(m.Info.Outputs),
		"parameters": map[string]any{"runtime": m.Info.Runtime, "max_batch_size": m.Info.MaxBatchSize},
	})
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	m, err := s.model(r)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	if !s.eng.Ready() {
		writeError(w, s.log, infergate.Errorf(infergate.EUnavailable, "model %q is not ready", m.Info.Name))
		return
	}
	writeJSON(w, 200, map[string]any{"name": m.Info.Name, "ready": true})
}

func (s *Server) profile(w http.ResponseWriter, r *http.Request) {
	m, err := s.model(r)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	lat := m.Sched.Latency()
	writeJSON(w, 200, map[string]any{"model": m.Info.Name, "points": lat.Points(), "overhead": lat.Overhead(), "dispatch": lat.Dispatch()})
}

func (s *Server) getBuf() *bytes.Buffer {
	if b, ok := s.bufs.Get().(*bytes.Buffer); ok {
		b.Reset()
		return b
	}
	return new(bytes.Buffer)
}

// infer serves POST /v2/models/{model}/infer.
func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	m, err := s.model(r)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	if !s.eng.Ready() {
		writeError(w, s.log, infergate.Errorf(infergate.EUnavailable, "server is not ready"))
		return
	}
	body := s.getBuf()
	// The decoded tensors may share body's memory, and a worker may still
	// read them if the client leaves mid-batch: the buffer goes back to the
	// pool only once the scheduler has answered.
	reuse := false
	defer func() {
		// Big bodies are not kept: the pool would pin them.
		if reuse && body.Cap() <= maxPooledBody {
			s.bufs.Put(body)
		}
	}()
	if r.ContentLength > s.opt.MaxBodyBytes {
		writeError(w, s.log, infergate.Errorf(infergate.ETooLarge, "request body of %d bytes exceeds %d", r.ContentLength, s.opt.MaxBodyBytes))
		return
	}
	if r.ContentLength > 0 {
		// Trust the declared length only up to a bound: a client that
		// declares 64 MiB and sends nothing must not cost 64 MiB.
		body.Grow(int(min(r.ContentLength, maxPooledBody)))
	}
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, s.opt.MaxBodyBytes)); err != nil {
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			err = &infergate.Error{Code: infergate.EInvalid, Message: "could not read the request body", Err: err}
		}
		writeError(w, s.log, err)
		return
	}
	headerLen := -1
	if h := r.Header.Get(HeaderLength); h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 0 || n > body.Len() {
			writeError(w, s.log, infergate.Errorf(infergate.EInvalid, "%s: %q is not a length within the %d-byte body", HeaderLength, h, body.Len()))
			return
		}
		headerLen = n
	}
	req, err := kserve.DecodeInferRequest(body.Bytes(), headerLen, s.opt.Limits)
	if err != nil {
		reuse = true
		writeError(w, s.log, err)
		return
	}
	class, timeout, err := schedule(r, req)
	if err != nil {
		reuse = true
		writeError(w, s.log, err)
		return
	}
	items, err := kserve.ValidateInputs(req, m.Info.Inputs, m.Info.MaxBatchSize)
	if err != nil {
		reuse = true
		writeError(w, s.log, err)
		return
	}
	want, err := requestedOutputs(req, m.Info.Outputs)
	if err != nil {
		reuse = true
		writeError(w, s.log, err)
		return
	}
	res, err := m.Submit(r.Context(), class, req.Inputs, items, timeout)
	if err != nil {
		reuse = infergate.ErrorCode(err) != infergate.ECanceled && infergate.ErrorCode(err) != infergate.EDeadline
		writeError(w, s.log, err)
		return
	}
	reuse = true
	out := kserve.InferResponse{ModelName: m.Info.Name, ModelVersion: m.Info.Version, ID: req.ID}
	for _, t := range res.Outputs {
		if _, ok := want[t.Name]; ok || len(want) == 0 {
			out.Outputs = append(out.Outputs, t)
		}
	}
	bp, _ := s.outBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	buf, hl := kserve.AppendInferResponse((*bp)[:0], &out, req.OutputBinary)
	defer func() {
		if cap(buf) <= maxPooledBody {
			*bp = buf[:0]
			s.outBufs.Put(bp)
		}
	}()
	h := w.Header()
	if hl < len(buf) {
		h.Set("Content-Type", "application/octet-stream")
		h.Set(HeaderLength, strconv.Itoa(hl))
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	h.Set("X-Infergate-Queue-Ms", fmtMS(res.Queued))
	h.Set("X-Infergate-Compute-Ms", fmtMS(res.Compute))
	h.Set("X-Infergate-Batch-Size", strconv.Itoa(res.BatchSize))
	server := time.Since(start)
	h.Set(ServerTimeHeader, fmtMS(server))
	_, _ = w.Write(buf)
	// What the request cost outside the scheduler, for the planner.
	// (Up to the same point as the server time: writing the answer is the
	// client path's, as a client measures it.)
	m.Sched.Latency().ObserveOverhead(res.BatchSize, server-res.Queued-res.Compute)
}

func fmtMS(d time.Duration) string { return strconv.FormatFloat(d.Seconds()*1e3, 'f', 3, 64) }

// requestedOutputs returns the set of requested output names (nil: all);
// every name must be a model output.
func requestedOutputs(req *kserve.InferRequest, specs []infergate.TensorSpec) (map[string]struct{}, error) {
	if len(req.Outputs) == 0 {
		return nil, nil
	}
	want := make(map[string]struct{}, len(req.Outputs))
	for _, o := range req.Outputs {
		found := false
		for _, s := range specs {
			found = found || s.Name == o.Name
		}
		if !found {
			return nil, infergate.Errorf(infergate.EInvalid, "unknown output %q", o.Name)
		}
		want[o.Name] = struct{}{}
	}
	return want, nil
}

// schedule reads a request's class and timeout: the class from the
// X-Infergate-Class header or the v2 "priority" parameter (1 urgent, 2 or
// 0 normal, 3 and above bulk), the timeout from the "timeout" parameter in
// microseconds, as in Triton's schedule-policy extension.
func schedule(r *http.Request, req *kserve.InferRequest) (infergate.Class, time.Duration, error) {
	class := infergate.ClassNormal
	if h := r.Header.Get(ClassHeader); h != "" {
		c, err := infergate.ParseClass(h)
		if err != nil {
			return 0, 0, err
		}
		class = c
	} else if p, ok := req.Parameters["priority"]; ok {
		n, ok := intParam(p)
		switch {
		case !ok || n < 0:
			return 0, 0, infergate.Errorf(infergate.EInvalid, "parameters.priority: want a non-negative integer")
		case n == 1:
			class = infergate.ClassUrgent
		case n >= 3:
			class = infergate.ClassBulk
		}
	}
	var timeout time.Duration
	if p, ok := req.Parameters["timeout"]; ok {
		n, ok := intParam(p)
		if !ok || n < 0 || n > math.MaxInt64/int64(time.Microsecond) {
			return 0, 0, infergate.Errorf(infergate.EInvalid, "parameters.timeout: want microseconds as a non-negative integer below 2^63 ns")
		}
		timeout = time.Duration(n) * time.Microsecond
	}
	if c, ok := req.Parameters["class"].(string); ok && r.Header.Get(ClassHeader) == "" {
		cl, err := infergate.ParseClass(c)
		if err != nil {
			return 0, 0, err
		}
		class = cl
	}
	return class, timeout, nil
}

func intParam(v any) (int64, bool) {
	switch x := v.(type) {
	case float64:
		if x != float64(int64(x)) {
			return 0, false
		}
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}
