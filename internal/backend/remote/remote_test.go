package remote

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/backend/remote/remotetest"
	"github.com/infergate/infergate/internal/batching"
)

const dim = 4

// newUpstream starts a fake v2 server, closed at cleanup.
func newUpstream(t *testing.T) *remotetest.Server {
	t.Helper()
	up := remotetest.NewServer(dim)
	t.Cleanup(up.Close)
	return up
}

// newRuntime is New with millisecond backoffs.
func newRuntime(opt Options) *Runtime {
	if opt.Backoff == 0 {
		opt.Backoff, opt.MaxBackoff = time.Millisecond, 5*time.Millisecond
	}
	return New(opt)
}

func mustOpen(t *testing.T, rt *Runtime, url string) *Session {
	t.Helper()
	s, err := rt.Open(url, backend.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return s.(*Session)
}

// checkRows checks outputs of the fake model for rows filled with vals.
func checkRows(t *testing.T, outs []infergate.Tensor, vals ...float32) {
	t.Helper()
	n := int64(len(vals))
	if len(outs) != 2 || outs[0].Name != "sum" || outs[1].Name != "neg" {
		t.Fatalf("outputs %v, want sum and neg in metadata order", names(outs))
	}
	if !slices.Equal(outs[0].Shape, []int64{n, 1}) || !slices.Equal(outs[1].Shape, []int64{n, dim}) {
		t.Fatalf("output shapes %v and %v, want [%d 1] and [%d %d]", outs[0].Shape, outs[1].Shape, n, n, dim)
	}
	sum, neg := fake.Floats(outs[0]), fake.Floats(outs[1])
	for i, v := range vals {
		if sum[i] != dim*v {
			t.Errorf("row %d: sum %v, want %v", i, sum[i], dim*v)
		}
		for j := range dim {
			if neg[i*dim+j] != -v {
				t.Errorf("row %d: neg[%d] %v, want %v", i, j, neg[i*dim+j], -v)
			}
		}
	}
}

func names(ts []infergate.Tensor) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out
}

// TestSchedulerBatchIsOneUpstreamCall is the point of the backend: through
// a real scheduler, n concurrent requests become one upstream call of
// batch n, and each caller gets its own rows back.
func TestSchedulerBatchIsOneUpstreamCall(t *testing.T) {
	up := newUpstream(t)
	sess := mustOpen(t, newRuntime(Options{}), up.ModelURL())
	const n = 8
	// Size 8 fires the batch; the delay is long enough that only the size
	// can.
	pol := batching.Policy{Kind: batching.Hybrid, MaxBatchSize: n, MaxQueueDelay: time.Minute}
	s := batching.New(batching.Config{Model: "sum", MaxBatchSize: n, Policies: [infergate.NumClasses]batching.Policy{pol, pol, pol}})
	s.Start(sess)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	type result struct {
		resp *batching.Response
		err  error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := s.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(dim, float32(i+1))}, 1, 0)
			results[i] = result{resp, err}
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
		if r.resp.BatchSize != n {
			t.Errorf("request %d ran in a batch of %d, want %d", i, r.resp.BatchSize, n)
		}
		checkRows(t, r.resp.Outputs, float32(i+1))
	}
	want := []remotetest.Call{{Batch: n, Binary: true, Status: http.StatusOK}}
	if got := up.Calls(); !slices.Equal(got, want) {
		t.Fatalf("upstream calls %+v, want %+v", got, want)
	}
}

func TestRunErrors(t *testing.T) {
	busy := remotetest.Fault{Status: http.StatusServiceUnavailable, Message: "busy"}
	tests := []struct {
		name    string
		faults  []remotetest.Fault
		opt     Options
		ctx     func(context.Context) (context.Context, context.CancelFunc)
		code    string // "" for success
		msg     string // in the message
		calls   int
		maxTime time.Duration // 0: no bound checked
	}{
		{name: "ok", calls: 1},
		{name: "503 then ok", faults: []remotetest.Fault{busy}, calls: 2},
		{name: "429 then ok", faults: []remotetest.Fault{{Status: http.StatusTooManyRequests, RetryAfter: "0"}}, calls: 2},
		{name: "502 then ok", faults: []remotetest.Fault{{Status: http.StatusBadGateway}}, calls: 2},
		{name: "reset then ok", faults: []remotetest.Fault{{Reset: true}}, calls: 2},
		{name: "503 every attempt", faults: []remotetest.Fault{busy, busy, busy}, code: infergate.EUnavailable,
			msg: "upstream unavailable after 3 attempts: HTTP 503: busy", calls: 3},
		{name: "resets every attempt", faults: []remotetest.Fault{{Reset: true}, {Reset: true}}, opt: Options{Attempts: 2},
			code: infergate.EUnavailable, msg: "after 2 attempts: connection closed", calls: 2},
		{name: "retry-after past the deadline", faults: []remotetest.Fault{{Status: http.StatusServiceUnavailable, RetryAfter: "60"}},
			opt: Options{Timeout: 5 * time.Second}, code: infergate.EUnavailable, msg: "would pass the deadline", calls: 1, maxTime: 2 * time.Second},
		{name: "400", faults: []remotetest.Fault{{Status: http.StatusBadRequest, Message: "shape mismatch"}},
			code: infergate.EUnprocess, msg: "upstream rejected the input: HTTP 400: shape mismatch", calls: 1},
		{name: "422", faults: []remotetest.Fault{{Status: http.StatusUnprocessableEntity, Message: "nope"}},
			code: infergate.EUnprocess, msg: "HTTP 422: nope", calls: 1},
		{name: "404", faults: []remotetest.Fault{{Status: http.StatusNotFound, Message: "unloaded"}},
			code: infergate.EUnavailable, msg: "upstream model not found: HTTP 404: unloaded", calls: 1},
		{name: "401", faults: []remotetest.Fault{{Status: http.StatusUnauthorized}},
			code: infergate.EInternal, msg: "credentials", calls: 1},
		{name: "500", faults: []remotetest.Fault{{Status: http.StatusInternalServerError, Message: "CUDA out of memory"}},
			code: infergate.EInternal, msg: "upstream failed: HTTP 500: CUDA out of memory", calls: 1},
		{name: "hang past the call timeout", faults: []remotetest.Fault{{Hang: true}}, opt: Options{Timeout: 200 * time.Millisecond},
			code: infergate.EDeadline, msg: "within 200ms", calls: 1, maxTime: 2 * time.Second},
		{name: "hang past the ctx deadline", faults: []remotetest.Fault{{Hang: true}},
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 200*time.Millisecond)
			},
			code: infergate.EDeadline, calls: 1, maxTime: 2 * time.Second},
		{name: "canceled", faults: []remotetest.Fault{{Hang: true}},
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(ctx)
				time.AfterFunc(100*time.Millisecond, cancel)
				return ctx, cancel
			},
			code: infergate.ECanceled, calls: 1, maxTime: 2 * time.Second},
		{name: "extra row", faults: []remotetest.Fault{{ExtraRow: true}}, code: infergate.EInternal, msg: "batch size 3, the request had 2", calls: 1},
		{name: "missing output", faults: []remotetest.Fault{{Body: `{"model_name":"sum","outputs":[{"name":"sum","datatype":"FP32","shape":[2,1],"data":[1,2]}]}`}},
			code: infergate.EInternal, msg: `no output "neg"`, calls: 1},
		{name: "wrong datatype", faults: []remotetest.Fault{{Body: `{"outputs":[{"name":"sum","datatype":"FP64","shape":[2,1],"data":[1,2]},` +
			`{"name":"neg","datatype":"FP32","shape":[2,4],"data":[1,2,3,4,5,6,7,8]}]}`}},
			code: infergate.EInternal, msg: `output "sum" has datatype FP64`, calls: 1},
		{name: "wrong fixed dimension", faults: []remotetest.Fault{{Body: `{"outputs":[{"name":"sum","datatype":"FP32","shape":[1,2],"data":[1,2]},` +
			`{"name":"neg","datatype":"FP32","shape":[2,4],"data":[1,2,3,4,5,6,7,8]}]}`}},
			code: infergate.EInternal, msg: `output "sum" has shape [1 2]`, calls: 1},
		{name: "malformed body", faults: []remotetest.Fault{{Body: `{"outputs":[`}}, code: infergate.EInternal, msg: "upstream response: malformed JSON", calls: 1},
		{name: "error in a 200 body", faults: []remotetest.Fault{{Body: `{"error":"odd"}`}}, code: infergate.EInternal, msg: "odd", calls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t)
			sess := mustOpen(t, newRuntime(tt.opt), up.ModelURL())
			// One good call first: binary is confirmed, so that a refused
			// input is not resent as JSON.
			if _, err := sess.Run(t.Context(), []infergate.Tensor{fake.Input(dim, 1)}); err != nil {
				t.Fatal(err)
			}
			up.Fail(tt.faults...)
			ctx, cancel := t.Context(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx(ctx)
			}
			defer cancel()
			start := time.Now()
			outs, err := sess.Run(ctx, []infergate.Tensor{fake.Input(dim, 1, 2)})
			took := time.Since(start)
			if calls := len(up.Calls()) - 1; calls != tt.calls {
				t.Errorf("%d upstream calls, want %d", calls, tt.calls)
			}
			if tt.maxTime > 0 && took > tt.maxTime {
				t.Errorf("took %s, want at most %s", took, tt.maxTime)
			}
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkRows(t, outs, 1, 2)
				return
			}
			var e *infergate.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *infergate.Error %s", err, err, tt.code)
			}
			if e.Code != tt.code || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("error %s %q, want %s containing %q", e.Code, e.Message, tt.code, tt.msg)
			}
			if strings.Contains(e.Message, up.URL) {
				t.Errorf("message %q names the upstream", e.Message)
			}
		})
	}
}

func TestRunConnectionRefused(t *testing.T) {
	up := remotetest.NewServer(dim)
	sess := mustOpen(t, newRuntime(Options{}), up.ModelURL())
	up.Close()
	_, err := sess.Run(t.Context(), []infergate.Tensor{fake.Input(dim, 1)})
	if code := infergate.ErrorCode(err); code != infergate.EUnavailable {
		t.Fatalf("error %v, want %s", err, infergate.EUnavailable)
	}
	if msg := infergate.ErrorMessage(err); msg != "upstream unavailable after 3 attempts: connection refused" {
		t.Errorf("message %q", msg)
	}
}

func TestEncoding(t *testing.T) {
	in := []infergate.Tensor{fake.Input(dim, 3)}
	ok := func(batch int, bin bool) remotetest.Call {
		return remotetest.Call{Batch: batch, Binary: bin, Status: http.StatusOK}
	}
	refused := remotetest.Call{Batch: -1, Binary: true, Status: http.StatusBadRequest}
	tests := []struct {
		name         string
		enc          Encoding
		rejectBinary bool
		runs         int
		code         string
		want         []remotetest.Call
	}{
		{"auto uses binary", EncodingAuto, false, 2, "", []remotetest.Call{ok(1, true), ok(1, true)}},
		// The first run is refused as binary and resent as JSON; later
		// runs go straight to JSON.
		{"auto falls back to JSON", EncodingAuto, true, 2, "", []remotetest.Call{refused, ok(1, false), ok(1, false)}},
		{"binary does not fall back", EncodingBinary, true, 1, infergate.EUnprocess, []remotetest.Call{refused}},
		{"json", EncodingJSON, false, 1, "", []remotetest.Call{ok(1, false)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t)
			up.SetRejectBinary(tt.rejectBinary)
			sess := mustOpen(t, newRuntime(Options{Encoding: tt.enc}), up.ModelURL())
			for range tt.runs {
				outs, err := sess.Run(t.Context(), in)
				if code := infergate.ErrorCode(err); code != tt.code {
					t.Fatalf("error %v, want code %q", err, tt.code)
				}
				if err == nil {
					checkRows(t, outs, 3)
				}
			}
			if got := up.Calls(); !slices.Equal(got, tt.want) {
				t.Errorf("upstream calls %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestAutoKeepsProbingUntilBinaryWorks: a refused input before binary is
// confirmed costs a JSON resend, and the mode stays undecided.
func TestAutoKeepsProbingUntilBinaryWorks(t *testing.T) {
	up := newUpstream(t)
	sess := mustOpen(t, newRuntime(Options{}), up.ModelURL())
	bad := remotetest.Fault{Status: http.StatusBadRequest, Message: "bad"}
	up.Fail(bad, bad)
	_, err := sess.Run(t.Context(), []infergate.Tensor{fake.Input(dim, 1)})
	if code := infergate.ErrorCode(err); code != infergate.EUnprocess {
		t.Fatalf("error %v, want %s", err, infergate.EUnprocess)
	}
	if _, err := sess.Run(t.Context(), []infergate.Tensor{fake.Input(dim, 1)}); err != nil {
		t.Fatal(err)
	}
	var bins []bool
	for _, c := range up.Calls() {
		bins = append(bins, c.Binary)
	}
	if want := []bool{true, false, true}; !slices.Equal(bins, want) {
		t.Errorf("binary per call %v, want %v", bins, want)
	}
}

func TestOpen(t *testing.T) {
	up := newUpstream(t)
	rt := newRuntime(Options{})
	for _, path := range []string{up.ModelURL(), up.ModelURL() + "/", up.ModelURL() + "/versions/1"} {
		sess := mustOpen(t, rt, path)
		wantIn := []infergate.TensorSpec{{Name: "input", DataType: infergate.FP32, Shape: []int64{-1, dim}}}
		wantOut := []infergate.TensorSpec{
			{Name: "sum", DataType: infergate.FP32, Shape: []int64{-1, 1}},
			{Name: "neg", DataType: infergate.FP32, Shape: []int64{-1, dim}},
		}
		if !specsEqual(sess.Inputs(), wantIn) || !specsEqual(sess.Outputs(), wantOut) {
			t.Errorf("%s: inputs %v outputs %v", path, sess.Inputs(), sess.Outputs())
		}
		outs, err := sess.Run(t.Context(), []infergate.Tensor{fake.Input(dim, 2)})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		checkRows(t, outs, 2)
		if err := sess.Close(); err != nil {
			t.Error(err)
		}
	}

	// Errors.
	tests := []struct {
		name, path, code, msg string
	}{
		{"unknown model", up.URL + "/v2/models/other", infergate.EUnavailable, "upstream model not found: HTTP 404: unknown model"},
		{"not a model URL", up.URL + "/v2/models", infergate.EInvalid, "path must end in"},
		{"password redacted", "http://u:secret@" + strings.TrimPrefix(up.URL, "http://") + "/v2/models/other", infergate.EUnavailable, "u:xxxxx@"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rt.Open(tt.path, backend.Options{})
			var e *infergate.Error
			if !errors.As(err, &e) || e.Code != tt.code || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("error %v, want %s containing %q", err, tt.code, tt.msg)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// TestOpenWaitsForUpstream: metadata requests are retried while the
// upstream starts, until OpenTimeout.
func TestOpenWaitsForUpstream(t *testing.T) {
	up := newUpstream(t)
	var n atomic.Int32
	starting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 5 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		up.Config.Handler.ServeHTTP(w, r)
	}))
	defer starting.Close()
	sess := mustOpen(t, newRuntime(Options{}), starting.URL+"/v2/models/"+remotetest.ModelName)
	if n.Load() != 6 || len(sess.Inputs()) != 1 {
		t.Errorf("%d metadata requests, inputs %v", n.Load(), sess.Inputs())
	}

	// A closed port: retried until OpenTimeout, then an error.
	addr := starting.URL
	starting.Close()
	start := time.Now()
	_, err := newRuntime(Options{OpenTimeout: 300 * time.Millisecond}).Open(addr+"/v2/models/sum", backend.Options{})
	if code := infergate.ErrorCode(err); code != infergate.EUnavailable && code != infergate.EDeadline {
		t.Fatalf("error %v, want %s or %s", err, infergate.EUnavailable, infergate.EDeadline)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 3*time.Second {
		t.Errorf("gave up after %s, want about the 300ms open timeout", took)
	}
}

func specsEqual(a, b []infergate.TensorSpec) bool {
	return slices.EqualFunc(a, b, func(x, y infergate.TensorSpec) bool {
		return x.Name == y.Name && x.DataType == y.DataType && slices.Equal(x.Shape, y.Shape)
	})
}

func TestDispatch(t *testing.T) {
	up := newUpstream(t)
	d := Dispatch(fake.Runtime{}, newRuntime(Options{}))
	if d.Name() != "fake" {
		t.Errorf("name %q, want the local runtime's", d.Name())
	}
	tests := []struct {
		path   string
		remote bool
	}{
		{"models/m.onnx", false},
		{"/srv/http://x.onnx", false},
		{up.ModelURL(), true},
		{"HTTP://" + strings.TrimPrefix(up.ModelURL(), "http://"), true},
	}
	for _, tt := range tests {
		if IsRemote(tt.path) != tt.remote {
			t.Errorf("IsRemote(%q) = %v", tt.path, !tt.remote)
		}
		s, err := d.Open(tt.path, backend.Options{})
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		if _, isRemote := s.(*Session); isRemote != tt.remote {
			t.Errorf("%s opened as %T", tt.path, s)
		}
	}
	if !IsRemote("https://h/v2/models/m") || IsRemote("ftp://h/v2/models/m") {
		t.Error("IsRemote: https or ftp misjudged")
	}
}

func TestBackoff(t *testing.T) {
	rt := New(Options{Backoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond})
	tests := []struct {
		n          int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{1, 0, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 0, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 0, 150 * time.Millisecond, 300 * time.Millisecond},
		{40, 0, 150 * time.Millisecond, 300 * time.Millisecond},
		{1, 2 * time.Second, 2 * time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		for range 50 {
			if d := rt.backoff(tt.n, tt.retryAfter); d < tt.lo || d > tt.hi {
				t.Fatalf("backoff(%d, %s) = %s, want %s..%s", tt.n, tt.retryAfter, d, tt.lo, tt.hi)
			}
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"2", 2 * time.Second},
		{" 7 ", 7 * time.Second},
		{"-3", 0},
		{"soon", 0},
		{"999999", time.Hour},
		{"Mon, 02 Jan 2006 15:04:05 GMT", 0}, // in the past
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	if d := parseRetryAfter(time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)); d < 55*time.Second || d > time.Minute {
		t.Errorf("HTTP date a minute ahead: %s", d)
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		body   string
		status int
		want   string
	}{
		{`{"error":"unknown input"}`, 400, "unknown input"},
		{"plain text\n", 500, "plain text"},
		{"", 503, "Service Unavailable"},
		{`{"detail":"x"}`, 422, `{"detail":"x"}`},
		{`{"error":""}`, 500, "Internal Server Error"},
		{strings.Repeat("é", 400), 500, strings.Repeat("é", 256) + "..."},
	}
	for _, tt := range tests {
		if got := errorMessage([]byte(tt.body), tt.status); got != tt.want {
			t.Errorf("errorMessage(%.20q) = %.40q, want %.40q", tt.body, got, tt.want)
		}
	}
}

// TestAutoDoesNotResendForMissingModel: a 404 before binary is confirmed
// is about the model, not the encoding.
func TestAutoDoesNotResendForMissingModel(t *testing.T) {
	up := newUpstream(t)
	sess := mustOpen(t, newRuntime(Options{}), up.ModelURL())
	up.Fail(remotetest.Fault{Status: http.StatusNotFound})
	_, err := sess.Run(t.Context(), []infergate.Tensor{fake.Input(dim, 1)})
	if code := infergate.ErrorCode(err); code != infergate.EUnavailable || len(up.Calls()) != 1 {
		t.Fatalf("error %v after %d calls, want %s after 1", err, len(up.Calls()), infergate.EUnavailable)
	}
}
