package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/kserve"
)

// Encoding says how tensors travel to the upstream.
type Encoding string

// The encodings.
const (
	// EncodingAuto sends binary tensor data and falls back to JSON for an
	// upstream that refuses it (see the package doc).
	EncodingAuto Encoding = "auto"
	// EncodingBinary always sends binary tensor data and asks for binary
	// outputs.
	EncodingBinary Encoding = "binary"
	// EncodingJSON always sends JSON and asks for JSON outputs.
	EncodingJSON Encoding = "json"
)

// Options configure a Runtime.
type Options struct {
	// Timeout bounds one Session.Run, retries included, on top of its
	// ctx. Optional. Defaults to 30s.
	Timeout time.Duration
	// OpenTimeout bounds Runtime.Open's metadata request, retries
	// included: an upstream that is still starting gets this long.
	// Optional. Defaults to 30s.
	OpenTimeout time.Duration
	// Attempts is the most upstream calls one Run makes when they fail in
	// a retryable way. Optional. Defaults to 3; 1 disables retries.
	Attempts int
	// Backoff is the wait before the first retry, doubled for each next
	// one up to MaxBackoff, with jitter. Optional. Defaults to 50ms and 1s.
	Backoff, MaxBackoff time.Duration
	// Encoding of requests. Optional. Defaults to EncodingAuto.
	Encoding Encoding
	// MaxResponseBytes bounds an upstream response body. Optional.
	// Defaults to 1 GiB.
	MaxResponseBytes int64
	// Client makes the HTTP calls. Optional. Defaults to a client with
	// keep-alive connections, up to 64 idle per host, and no compression
	// (tensor data does not compress well enough to pay for it).
	Client *http.Client
	// Logger is for retries and the fallback to JSON. Optional.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultOpenTimeout      = 30 * time.Second
	DefaultAttempts         = 3
	DefaultBackoff          = 50 * time.Millisecond
	DefaultMaxBackoff       = time.Second
	DefaultMaxResponseBytes = 1 << 30
)

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	o.MaxBackoff = max(o.MaxBackoff, o.Backoff)
	if o.Encoding == "" {
		o.Encoding = EncodingAuto
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.Client == nil {
		o.Client = newClient()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// newClient returns the default HTTP client: the default transport's dial
// and TLS settings and proxy from the environment, with more idle
// connections kept per host (one per session in flight) and no
// compression. It has no overall timeout: every call carries a ctx.
func newClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	t.DisableCompression = true
	return &http.Client{Transport: t}
}

// Runtime opens sessions on remote v2 models. Its sessions share one HTTP
// client. It is safe for concurrent use.
type Runtime struct {
	opt Options
	log *slog.Logger
}

var (
	_ backend.Runtime = (*Runtime)(nil)
	_ backend.Session = (*Session)(nil)
)

// New returns a Runtime.
func New(opt Options) *Runtime {
	opt = opt.withDefaults()
	return &Runtime{opt: opt, log: opt.Logger.With("runtime", "kserve")}
}

// Name implements backend.Runtime.
func (r *Runtime) Name() string { return "kserve" }

// errOpenTimeout and errRunTimeout are the causes of the runtime's own
// deadlines, told apart from the caller's.
var (
	errOpenTimeout = errors.New("remote: open timeout")
	errRunTimeout  = errors.New("remote: call timeout")
)

// Open reads the metadata of the model at path, its upstream URL (see the
// package doc), and returns a session on it. opts do not apply: the
// upstream decides how the model runs. Transient failures are retried
// until OpenTimeout. Errors are *infergate.Error: EInvalid for a bad URL
// or malformed metadata, EUnprocess for a model with datatypes infergate
// does not support, and the codes of the package doc's table for the
// upstream's answer.
func (r *Runtime) Open(path string, _ backend.Options) (backend.Session, error) {
	u, err := parseModelURL(path)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), r.opt.OpenTimeout, errOpenTimeout)
	defer cancel()
	body, err := retry(ctx, r, 0, "metadata", func(ctx context.Context) ([]byte, error) {
		return r.get(ctx, u)
	})
	if err != nil {
		return nil, wrapf(err, "model %s: metadata", u.redacted)
	}
	in, out, err := parseMetadata(body)
	if err != nil {
		return nil, wrapf(err, "model %s", u.redacted)
	}
	s := &Session{rt: r, url: u, inputs: in, outputs: out, batchable: batchable(in, out),
		log: r.log.With("model", u.redacted)}
	switch r.opt.Encoding {
	case EncodingBinary:
		s.mode.Store(modeBinary)
	case EncodingJSON:
		s.mode.Store(modeJSON)
	}
	return s, nil
}

// wrapf prefixes the message of an *infergate.Error, keeping its code.
func wrapf(err error, format string, args ...any) error {
	var e *infergate.Error
	if !errors.As(err, &e) {
		return err
	}
	p := infergate.Errorf(e.Code, format, args...)
	return &infergate.Error{Code: e.Code, Message: p.Message + ": " + e.Message, Err: e.Err}
}

// batchable reports whether every spec's first dimension is dynamic: the
// batch dimension, whose size a response must keep.
func batchable(in, out []infergate.TensorSpec) bool {
	for _, specs := range [2][]infergate.TensorSpec{in, out} {
		for _, s := range specs {
			if len(s.Shape) == 0 || s.Shape[0] != -1 {
				return false
			}
		}
	}
	return true
}

// get fetches the model metadata.
func (r *Runtime) get(ctx context.Context, u modelURL) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.meta, nil)
	if err != nil {
		return nil, infergate.Errorf(infergate.EInvalid, "model URL %s: %v", u.redacted, err)
	}
	req.Header.Set("Accept", "application/json")
	b, _, err := r.do(req, u)
	return b, err
}

// do sends req and returns the body and header of a 200 answer. Any other
// status is an *upstreamError, and so is a transport failure.
func (r *Runtime) do(req *http.Request, u modelURL) ([]byte, http.Header, error) {
	resp, err := r.opt.Client.Do(req)
	if err != nil {
		return nil, nil, &upstreamError{url: u.redacted, err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, nil, &upstreamError{url: u.redacted, status: resp.StatusCode, msg: errorMessage(b, resp.StatusCode),
			retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	}
	lim := r.opt.MaxResponseBytes
	if resp.ContentLength > lim {
		return nil, nil, infergate.Errorf(infergate.EInternal, "upstream response of %d bytes exceeds the limit of %d", resp.ContentLength, lim)
	}
	var b []byte
	if n := resp.ContentLength; n >= 0 {
		b = make([]byte, n)
		_, err = io.ReadFull(resp.Body, b)
	} else {
		b, err = io.ReadAll(io.LimitReader(resp.Body, lim+1))
		if err == nil && int64(len(b)) > lim {
			return nil, nil, infergate.Errorf(infergate.EInternal, "upstream response exceeds the limit of %d bytes", lim)
		}
	}
	if err != nil {
		// The connection broke while the body was read.
		return nil, nil, &upstreamError{url: u.redacted, err: err}
	}
	return b, resp.Header, nil
}

// Session modes: how requests are encoded.
const (
	modeUnknown int32 = iota // auto, binary not yet confirmed
	modeBinary
	modeJSON
)

// Session is one remote model. Run calls may be concurrent (the HTTP
// client is), though the scheduler serialises them per session.
type Session struct {
	rt        *Runtime
	url       modelURL
	inputs    []infergate.TensorSpec
	outputs   []infergate.TensorSpec
	batchable bool
	mode      atomic.Int32
	log       *slog.Logger
}

// Inputs implements backend.Session.
func (s *Session) Inputs() []infergate.TensorSpec { return s.inputs }

// Outputs implements backend.Session.
func (s *Session) Outputs() []infergate.TensorSpec { return s.outputs }

// Close implements backend.Session. The shared HTTP client stays open.
func (s *Session) Close() error { return nil }

// Run sends the batch as one infer request, retrying retryable failures
// (see the package doc), and returns the outputs in the order of Outputs.
// Each output is checked against the metadata: datatype, rank, fixed
// dimensions and, for a batchable model, the batch size of the inputs.
// Errors are *infergate.Error with the codes of the package doc's table.
func (s *Session) Run(ctx context.Context, inputs []infergate.Tensor) ([]infergate.Tensor, error) {
	if len(inputs) != len(s.inputs) {
		return nil, infergate.Errorf(infergate.EInternal, "remote session: %d inputs for a model of %d", len(inputs), len(s.inputs))
	}
	// The scheduler names the inputs after the request's; send the
	// model's names.
	named := make([]infergate.Tensor, len(inputs))
	for i := range inputs {
		named[i] = inputs[i]
		named[i].Name = s.inputs[i].Name
	}
	batch := int64(-1)
	if s.batchable && len(named[0].Shape) > 0 {
		batch = named[0].Shape[0]
	}
	ctx, cancel := context.WithTimeoutCause(ctx, s.rt.opt.Timeout, errRunTimeout)
	defer cancel()
	var bodies [2]encoded // [0] JSON, [1] binary; encoded once per Run
	return retry(ctx, s.rt, s.rt.opt.Attempts, "infer", func(ctx context.Context) ([]infergate.Tensor, error) {
		return s.call(ctx, named, batch, &bodies)
	})
}

type encoded struct {
	body      []byte
	headerLen int
}

// call makes one upstream call in the session's mode; in auto mode before
// binary is confirmed, a binary request the upstream refuses is resent as
// JSON once.
func (s *Session) call(ctx context.Context, in []infergate.Tensor, batch int64, bodies *[2]encoded) ([]infergate.Tensor, error) {
	mode := s.mode.Load()
	outs, err := s.post(ctx, in, batch, mode != modeJSON, bodies)
	if mode != modeUnknown {
		return outs, err
	}
	if err == nil {
		s.mode.CompareAndSwap(modeUnknown, modeBinary)
		return outs, nil
	}
	var ue *upstreamError
	if !errors.As(err, &ue) || !ue.mayRefuseBinary() || ctx.Err() != nil {
		return nil, err
	}
	outs, jerr := s.post(ctx, in, batch, false, bodies)
	if jerr != nil {
		return nil, jerr
	}
	if s.mode.CompareAndSwap(modeUnknown, modeJSON) {
		s.log.Warn("the upstream refused binary tensor data; sending JSON from now on",
			"status", ue.status, "error", ue.msg)
	}
	return outs, nil
}

// post sends one infer request and checks its outputs.
func (s *Session) post(ctx context.Context, in []infergate.Tensor, batch int64, bin bool, bodies *[2]encoded) ([]infergate.Tensor, error) {
	k := 0
	if bin {
		k = 1
	}
	e := &bodies[k]
	if e.body == nil {
		req := kserve.InferRequest{Inputs: in, BinaryOutput: bin}
		e.body, e.headerLen = kserve.AppendInferRequest(nil, &req, bin)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url.infer, bytes.NewReader(e.body))
	if err != nil {
		return nil, infergate.Errorf(infergate.EInternal, "model URL %s: %v", s.url.redacted, err)
	}
	req.Header.Set("Accept", "application/json, application/octet-stream")
	if bin {
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set(kserve.HeaderContentLength, strconv.Itoa(e.headerLen))
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	b, header, err := s.rt.do(req, s.url)
	if err != nil {
		return nil, err
	}
	hl := -1
	if h := header.Get(kserve.HeaderContentLength); h != "" {
		if hl, err = strconv.Atoi(h); err != nil || hl < 0 {
			return nil, infergate.Errorf(infergate.EInternal, "upstream response: bad %s %q", kserve.HeaderContentLength, truncate(h))
		}
	}
	resp, err := kserve.DecodeInferResponse(b, hl)
	if err != nil {
		return nil, &infergate.Error{Code: infergate.EInternal, Message: "upstream response: " + infergate.ErrorMessage(err), Err: err}
	}
	return s.check(resp.Outputs, batch)
}

// check picks the model's outputs out of a response, in the order of
// Outputs, and checks them against the metadata.
func (s *Session) check(got []infergate.Tensor, batch int64) ([]infergate.Tensor, error) {
	outs := make([]infergate.Tensor, len(s.outputs))
	for i, sp := range s.outputs {
		j := -1
		for k := range got {
			if got[k].Name == sp.Name {
				j = k
				break
			}
		}
		if j < 0 {
			return nil, infergate.Errorf(infergate.EInternal, "upstream response has no output %q", sp.Name)
		}
		t := got[j]
		if t.DataType != sp.DataType {
			return nil, infergate.Errorf(infergate.EInternal, "upstream output %q has datatype %s, the metadata says %s", sp.Name, t.DataType, sp.DataType)
		}
		if !shapeFits(t.Shape, sp.Shape) {
			return nil, infergate.Errorf(infergate.EInternal, "upstream output %q has shape %v, the metadata says %v", sp.Name, t.Shape, sp.Shape)
		}
		if batch >= 0 && t.Shape[0] != batch {
			return nil, infergate.Errorf(infergate.EInternal, "upstream output %q has batch size %d, the request had %d", sp.Name, t.Shape[0], batch)
		}
		outs[i] = t
	}
	return outs, nil
}

// shapeFits reports whether shape has spec's rank and fixed dimensions.
func shapeFits(shape, spec []int64) bool {
	if len(shape) != len(spec) {
		return false
	}
	for k, d := range spec {
		if d >= 0 && shape[k] != d {
			return false
		}
	}
	return true
}
