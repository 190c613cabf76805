package loadgen

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate"
)

// fakeServer is a hand-written v2 infer endpoint with controllable latency,
// a switch that answers 429 for a fraction of requests, and a one-off stall
// that holds up every request arriving while it lasts.
type fakeServer struct {
	t   *testing.T
	srv *httptest.Server

	latency     atomic.Int64 // per-request latency, ns
	rejectEvery atomic.Int64 // every n-th request gets 429 + Retry-After (0: never)
	serverMS    atomic.Value // string: the X-Infergate-Server-Ms header to send ("" or nil: none)
	stallAt     atomic.Int64 // the n-th request stalls the server (0: never)
	stallFor    time.Duration
	slots       chan struct{} // when non-nil: concurrent service slots (capacity model)

	gate    sync.RWMutex // held for writing during the stall
	n       atomic.Int64
	byClass [infergate.NumClasses]atomic.Int64
	bad     atomic.Int64 // malformed requests
	badMsg  atomic.Value

	connMu    sync.Mutex
	conns     int // open connections, server side
	peakConns int
	dialed    int // connections accepted
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t, stallFor: 300 * time.Millisecond}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.handle))
	f.srv.Config.ConnState = f.connState
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) connState(_ net.Conn, st http.ConnState) {
	f.connMu.Lock()
	defer f.connMu.Unlock()
	switch st {
	case http.StateNew:
		f.conns++
		f.dialed++
		f.peakConns = max(f.peakConns, f.conns)
	case http.StateClosed, http.StateHijacked:
		f.conns--
	}
}

// connStats returns the open, peak and total connections seen server-side.
func (f *fakeServer) connStats() (open, peak, total int) {
	f.connMu.Lock()
	defer f.connMu.Unlock()
	return f.conns, f.peakConns, f.dialed
}

// checkConnsClosed fails unless every connection to the server gets closed
// soon: Run must close what it opened, idle or not.
func (f *fakeServer) checkConnsClosed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		open, peak, total := f.connStats()
		if open == 0 {
			if total == 0 {
				t.Errorf("the server saw no connection")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of %d connections (peak %d) still open after Run returned", open, total, peak)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// transports lists the values of Config.Transport the Run tests cover.
var transports = []string{TransportFast, TransportNetHTTP}

// forEachTransport runs test once per transport.
func forEachTransport(t *testing.T, test func(t *testing.T, tr string)) {
	for _, tr := range transports {
		t.Run("transport="+tr, func(t *testing.T) { test(t, tr) })
	}
}

func (f *fakeServer) fail(w http.ResponseWriter, msg string) {
	f.bad.Add(1)
	f.badMsg.Store(msg)
	http.Error(w, msg, http.StatusBadRequest)
}

func (f *fakeServer) handle(w http.ResponseWriter, r *http.Request) {
	n := f.n.Add(1)
	if n == f.stallAt.Load() {
		f.gate.Lock()
		time.Sleep(f.stallFor)
		f.gate.Unlock()
	}
	f.gate.RLock() // waits out a stall in progress
	f.gate.RUnlock()

	if r.Method != http.MethodPost || r.URL.Path != "/v2/models/m/infer" {
		f.fail(w, "bad method or path "+r.Method+" "+r.URL.Path)
		return
	}
	cl, err := infergate.ParseClass(r.Header.Get(ClassHeader))
	if err != nil || r.Header.Get(ClassHeader) == "" {
		f.fail(w, "bad class header")
		return
	}
	f.byClass[cl].Add(1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.fail(w, "read body")
		return
	}
	if msg := checkBody(r.Header, body); msg != "" {
		f.fail(w, msg)
		return
	}

	if k := f.rejectEvery.Load(); k > 0 && n%k == 0 {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "overloaded", http.StatusTooManyRequests)
		return
	}
	if f.slots != nil {
		select {
		case f.slots <- struct{}{}:
			defer func() { <-f.slots }()
		case <-r.Context().Done():
			return
		}
	}
	if d := time.Duration(f.latency.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done(): // the client gave up
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	switch v, _ := f.serverMS.Load().(string); {
	case v == "every-other":
		if n%2 == 0 {
			w.Header().Set(ServerTimeHeader, "1.000")
		}
	case v != "":
		w.Header().Set(ServerTimeHeader, v)
	}
	io.WriteString(w, `{"model_name":"m","outputs":[{"name":"logits","shape":[1,2],"datatype":"FP32","data":[0.5,0.5]}]}`)
}

// checkBody validates a request for the reference input: "input", [1,768],
// FP32, in either payload format. It returns a complaint or "".
func checkBody(h http.Header, body []byte) string {
	type tensor struct {
		Name       string         `json:"name"`
		Shape      []int64        `json:"shape"`
		DataType   string         `json:"datatype"`
		Parameters map[string]any `json:"parameters"`
		Data       []float64      `json:"data"`
	}
	var req struct {
		Inputs  []tensor `json:"inputs"`
		Outputs []tensor `json:"outputs"`
	}
	switch h.Get("Content-Type") {
	case "application/json":
		if err := json.Unmarshal(body, &req); err != nil {
			return "json: " + err.Error()
		}
		if len(req.Inputs) != 1 || len(req.Inputs[0].Data) != 768 {
			return "json: want one input with 768 values"
		}
	case "application/octet-stream":
		hl, err := strconv.Atoi(h.Get("Inference-Header-Content-Length"))
		if err != nil || hl <= 0 || hl > len(body) {
			return "binary: bad Inference-Header-Content-Length"
		}
		if err := json.Unmarshal(body[:hl], &req); err != nil {
			return "binary header: " + err.Error()
		}
		if len(req.Inputs) != 1 || req.Inputs[0].Parameters["binary_data_size"] != float64(3072) {
			return "binary: want binary_data_size 3072"
		}
		if len(body)-hl != 3072 {
			return "binary: want 3072 bytes of tensor data"
		}
		if len(req.Outputs) != 1 || req.Outputs[0].Name != "logits" || req.Outputs[0].Parameters["binary_data"] != true {
			return "binary: want logits requested as binary data"
		}
		for i := 0; i < 3072; i += 4 {
			v := math.Float32frombits(binary.LittleEndian.Uint32(body[hl+i:]))
			if !(v >= -1 && v < 1) {
				return "binary: value out of range"
			}
		}
	default:
		return "bad content type " + h.Get("Content-Type")
	}
	in := req.Inputs[0]
	if in.Name != "input" || in.DataType != "FP32" || !reflect.DeepEqual(in.Shape, []int64{1, 768}) {
		return "bad input spec"
	}
	return ""
}

func (f *fakeServer) checkClean(t *testing.T) {
	t.Helper()
	if n := f.bad.Load(); n > 0 {
		t.Fatalf("server saw %d malformed requests, last: %v", n, f.badMsg.Load())
	}
}

func baseConfig(f *fakeServer, tr string, rate float64, d time.Duration) Config {
	return Config{URL: f.srv.URL, Model: "m", Rate: rate, Duration: d, Seed: 1, Timeout: 2 * time.Second, Transport: tr}
}

func TestRunRateAndNoLeaks(t *testing.T) { forEachTransport(t, testRunRateAndNoLeaks) }

func testRunRateAndNoLeaks(t *testing.T, tr string) {
	f := newFakeServer(t)
	f.latency.Store(int64(2 * time.Millisecond))
	before := runtime.NumGoroutine()

	res, err := Run(context.Background(), baseConfig(f, tr, 200, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	f.checkClean(t)
	t.Logf("\n%s", res.Table())
	if res.Sent < 120 || res.Sent > 280 {
		t.Errorf("sent %d requests at 200 req/s for 1s, want 120..280", res.Sent)
	}
	if res.OK != res.Sent || res.Errors != 0 || res.Rejected429 != 0 || res.Dropped != 0 {
		t.Errorf("want all OK, got %+v", res)
	}
	if res.StatusCounts[200] != res.OK {
		t.Errorf("status counts %v, want 200: %d", res.StatusCounts, res.OK)
	}
	if res.ThroughputRPS < 100 || res.ThroughputRPS > 300 {
		t.Errorf("throughput %.1f, want about 200", res.ThroughputRPS)
	}
	if res.P50 < 2*time.Millisecond || res.P50 > res.P99 || res.P99 > res.Max {
		t.Errorf("quantiles p50 %v p99 %v max %v: want 2ms <= p50 <= p99 <= max", res.P50, res.P99, res.Max)
	}
	if len(res.ByClass) != 1 || res.ByClass[infergate.ClassNormal] == nil {
		t.Errorf("empty mix: want only the normal class, got %v", res.ByClass)
	}
	if got := f.byClass[infergate.ClassNormal].Load(); got != int64(res.Sent) {
		t.Errorf("server saw %d normal requests, client sent %d", got, res.Sent)
	}
	if res.SLOAttainment < 0.9 {
		t.Errorf("slo attainment %.2f with 2ms latency and 100ms SLO", res.SLOAttainment)
	}
	if res.ClientCPUSeconds <= 0 {
		t.Errorf("client cpu %v, want > 0", res.ClientCPUSeconds)
	}

	// Every connection is closed, and no goroutine outlives Run (the
	// server's connection goroutines exit once the client closes its idle
	// connections).
	f.checkConnsClosed(t)
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d after\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

func TestRunBinaryPayloadAndWarmup(t *testing.T) { forEachTransport(t, testRunBinaryPayloadAndWarmup) }

func testRunBinaryPayloadAndWarmup(t *testing.T, tr string) {
	f := newFakeServer(t)
	cfg := baseConfig(f, tr, 200, 300*time.Millisecond)
	cfg.Warmup = 300 * time.Millisecond
	cfg.Payload = "binary"
	if tr == TransportNetHTTP {
		cfg.Client = f.srv.Client() // a caller's client is used as is
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.checkClean(t)
	if res.OK != res.Sent || res.Sent == 0 {
		t.Fatalf("want all OK, got %+v", res)
	}
	// About 60 measured out of about 120 served.
	if served := f.n.Load(); res.Sent < 25 || res.Sent > 100 || served < int64(res.Sent)+20 {
		t.Errorf("measured %d of %d served: warmup requests should be served but not counted", res.Sent, served)
	}
	if res.Duration != 300*time.Millisecond {
		t.Errorf("window %v, want 300ms", res.Duration)
	}
}

func TestRunServerTime(t *testing.T) { forEachTransport(t, testRunServerTime) }

func testRunServerTime(t *testing.T, tr string) {
	tests := []struct {
		name, header string
		reported     bool
		want         time.Duration // server p50 and p99 when reported
	}{
		{"reported", "2.500", true, 2500 * time.Microsecond},
		{"below resolution", "0.000", true, 0},
		{"absent", "", false, 0},
		{"garbage", "fast", false, 0},
		{"negative", "-3", false, 0},
		{"on some answers only", "every-other", false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeServer(t)
			f.latency.Store(int64(5 * time.Millisecond))
			f.serverMS.Store(tc.header)
			res, err := Run(context.Background(), baseConfig(f, tr, 100, 200*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			if res.OK < 2 {
				t.Fatalf("too few OK responses: %+v", res)
			}
			if res.ServerP50 != tc.want || res.ServerP99 != tc.want {
				t.Errorf("server p50 %v p99 %v, want %v", res.ServerP50, res.ServerP99, tc.want)
			}
			// The client path is the rest of each latency: the fake
			// answers after 5 ms, so at least 2.5 ms of it is outside
			// the reported server time.
			switch {
			case !tc.reported && (res.PathP50 != 0 || res.PathP99 != 0):
				t.Errorf("client path %v / %v without server times on every answer", res.PathP50, res.PathP99)
			case tc.reported && (res.PathP50 < 2500*time.Microsecond || res.PathP99 < res.PathP50 || res.PathP50 > res.P50):
				t.Errorf("client path p50 %v p99 %v (latency p50 %v)", res.PathP50, res.PathP99, res.P50)
			}
		})
	}
}

func TestRunClassMix(t *testing.T) { forEachTransport(t, testRunClassMix) }

func testRunClassMix(t *testing.T, tr string) {
	f := newFakeServer(t)
	cfg := baseConfig(f, tr, 400, 600*time.Millisecond)
	cfg.Mix = ClassMix{infergate.ClassUrgent: 0.2, infergate.ClassNormal: 0.5, infergate.ClassBulk: 0.3}
	cfg.SLO = map[infergate.Class]time.Duration{infergate.ClassUrgent: 20 * time.Millisecond}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.checkClean(t)
	t.Logf("\n%s", res.Table())
	for c, w := range cfg.Mix {
		cr := res.ByClass[c]
		if cr == nil {
			t.Fatalf("no result for %v", c)
		}
		frac := float64(cr.Sent) / float64(res.Sent)
		if math.Abs(frac-w) > 0.1 {
			t.Errorf("%v: %.2f of requests, want about %.2f", c, frac, w)
		}
		if got := f.byClass[c].Load(); got != int64(cr.Sent) {
			t.Errorf("%v: server saw %d, client counted %d", c, got, cr.Sent)
		}
	}
	if got := res.ByClass[infergate.ClassUrgent].SLO; got != 20*time.Millisecond {
		t.Errorf("urgent SLO %v, want 20ms", got)
	}
	if got := res.ByClass[infergate.ClassBulk].SLO; got != DefaultSLO {
		t.Errorf("bulk SLO %v, want default %v", got, DefaultSLO)
	}
}

func TestRun429(t *testing.T) { forEachTransport(t, testRun429) }

func testRun429(t *testing.T, tr string) {
	f := newFakeServer(t)
	f.rejectEvery.Store(4) // 25%
	res, err := Run(context.Background(), baseConfig(f, tr, 300, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	f.checkClean(t)
	cr := res.ByClass[infergate.ClassNormal]
	if cr.Rejected429 != res.StatusCounts[429] || cr.Rejected429 != res.Rejected429 {
		t.Errorf("429s: class %d, total %d, status counts %d", cr.Rejected429, res.Rejected429, res.StatusCounts[429])
	}
	frac := float64(cr.Rejected429) / float64(cr.Sent)
	if frac < 0.15 || frac > 0.35 {
		t.Errorf("rejected fraction %.2f, want about 0.25", frac)
	}
	if !cr.RetryAfterSeen {
		t.Error("RetryAfterSeen is false")
	}
	if cr.Errors != 0 || cr.OK+cr.Rejected429 != cr.Sent {
		t.Errorf("accounting: %+v", cr)
	}
	if cr.SLOAttainment > 0.8 {
		t.Errorf("slo attainment %.2f: 429s must count as misses", cr.SLOAttainment)
	}
	if ff := res.FailureFraction(); math.Abs(ff-frac) > 1e-9 {
		t.Errorf("failure fraction %.3f, want %.3f", ff, frac)
	}
}

// A server stall holds up every request that arrives while it lasts; an
// open-loop generator measuring from the scheduled time sees it in the
// latency of all of them, not just one.
func TestRunCoordinatedOmissionServerStall(t *testing.T) {
	forEachTransport(t, testRunCoordinatedOmissionServerStall)
}

func testRunCoordinatedOmissionServerStall(t *testing.T, tr string) {
	f := newFakeServer(t)
	f.stallAt.Store(50) // about 250ms in
	res, err := Run(context.Background(), baseConfig(f, tr, 200, 900*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	f.checkClean(t)
	t.Logf("\n%s", res.Table())
	if res.OK != res.Sent {
		t.Fatalf("want all OK, got %+v", res)
	}
	// About 60 of about 180 requests arrive during the 300ms stall, waiting
	// 0..300ms: the p99 reflects the stall, and the p95 too.
	if res.P99 < 200*time.Millisecond || res.Max < 250*time.Millisecond {
		t.Errorf("p99 %v, max %v: want >= 200ms, >= 250ms after a 300ms stall", res.P99, res.Max)
	}
	if res.P95 < 80*time.Millisecond {
		t.Errorf("p95 %v: want the stall to show beyond one request", res.P95)
	}
	if res.P50 > 100*time.Millisecond {
		t.Errorf("p50 %v: want most requests unaffected", res.P50)
	}
}

// When the generator itself falls behind (here: the dispatcher is held up
// for 200ms), requests go out late, and their latency still counts from
// the time they were scheduled.
func TestRunCoordinatedOmissionGeneratorBehind(t *testing.T) {
	forEachTransport(t, testRunCoordinatedOmissionGeneratorBehind)
}

func testRunCoordinatedOmissionGeneratorBehind(t *testing.T, tr string) {
	f := newFakeServer(t)
	cfg := baseConfig(f, tr, 200, 600*time.Millisecond)
	cfg.testHookDispatch = func(seq int) {
		if seq == 30 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent < 70 || res.Sent > 170 || res.OK != res.Sent {
		t.Errorf("sent %d, ok %d: want about 120, all OK (late requests are still sent)", res.Sent, res.OK)
	}
	if res.Max < 150*time.Millisecond || res.P95 < 50*time.Millisecond {
		t.Errorf("max %v, p95 %v: want the dispatcher's 200ms lag in the latencies", res.Max, res.P95)
	}
}

func TestRunDropsBeyondMaxInFlight(t *testing.T) { forEachTransport(t, testRunDropsBeyondMaxInFlight) }

func testRunDropsBeyondMaxInFlight(t *testing.T, tr string) {
	f := newFakeServer(t)
	f.latency.Store(int64(100 * time.Millisecond))
	cfg := baseConfig(f, tr, 200, 300*time.Millisecond)
	cfg.MaxInFlight = 2
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Dropped == 0 || res.Sent > 12 {
		t.Errorf("sent %d, dropped %d: want at most about 2 per 100ms sent, the rest dropped", res.Sent, res.Dropped)
	}
	if want := float64(res.OK) / float64(res.Sent+res.Dropped); res.SLOAttainment > want+1e-9 {
		t.Errorf("slo attainment %.2f: drops must count as misses (at most %.2f)", res.SLOAttainment, want)
	}
	if res.StatusCounts[200] != res.OK {
		t.Errorf("status counts %v", res.StatusCounts)
	}
	if res.ThroughputRPS > 25 {
		t.Errorf("throughput %.1f req/s, want at most about 20 (2 at a time, 100ms each)", res.ThroughputRPS)
	}
	if _, peak, _ := f.connStats(); peak > cfg.MaxInFlight {
		t.Errorf("%d connections at once, want at most MaxInFlight = %d", peak, cfg.MaxInFlight)
	}
	f.checkConnsClosed(t)
}

func TestRunTimeout(t *testing.T) { forEachTransport(t, testRunTimeout) }

func testRunTimeout(t *testing.T, tr string) {
	f := newFakeServer(t)
	f.latency.Store(int64(time.Second))
	cfg := baseConfig(f, tr, 100, 200*time.Millisecond)
	cfg.Timeout = 100 * time.Millisecond
	t0 := time.Now()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(t0); el > 800*time.Millisecond {
		t.Errorf("Run took %v: the request timeout should bound it", el)
	}
	if res.Sent == 0 || res.Errors != res.Sent || res.StatusCounts[0] != res.Sent {
		t.Errorf("want every request to time out as an error, got %+v", res)
	}
	f.checkConnsClosed(t)
}

func TestRunContextCancel(t *testing.T) { forEachTransport(t, testRunContextCancel) }

func testRunContextCancel(t *testing.T, tr string) {
	f := newFakeServer(t)
	f.latency.Store(int64(5 * time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	res, err := Run(ctx, baseConfig(f, tr, 100, 10*time.Second))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	if el := time.Since(t0); el > time.Second {
		t.Errorf("Run took %v after cancel", el)
	}
	if res == nil || res.Duration > 500*time.Millisecond || res.OK != 0 {
		t.Errorf("want a partial result for the 200ms run, got %+v", res)
	}
	if res != nil && (res.Sent == 0 || res.Errors != res.Sent) {
		t.Errorf("want the canceled requests counted as errors, got %+v", res)
	}
	f.checkConnsClosed(t)
}

func TestConfigValidation(t *testing.T) {
	good := Config{URL: "http://localhost:1", Model: "m", Rate: 1, Duration: time.Second}
	for name, mut := range map[string]func(*Config){
		"no url":       func(c *Config) { c.URL = "" },
		"bad url":      func(c *Config) { c.URL = "localhost:8080" },
		"no model":     func(c *Config) { c.Model = "" },
		"zero rate":    func(c *Config) { c.Rate = 0 },
		"nan rate":     func(c *Config) { c.Rate = math.NaN() },
		"no duration":  func(c *Config) { c.Duration = 0 },
		"payload":      func(c *Config) { c.Payload = "protobuf" },
		"transport":    func(c *Config) { c.Transport = "http2" },
		"shape":        func(c *Config) { c.ItemShape = []int64{0} },
		"weight":       func(c *Config) { c.Mix = ClassMix{infergate.ClassBulk: -1} },
		"unknown clas": func(c *Config) { c.Mix = ClassMix{infergate.Class(7): 1} },
	} {
		c := good
		mut(&c)
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestParseClassMix(t *testing.T) {
	m, err := ParseClassMix("urgent=0.1, normal=0.6,bulk=0.3")
	if err != nil {
		t.Fatal(err)
	}
	want := ClassMix{infergate.ClassUrgent: 0.1, infergate.ClassNormal: 0.6, infergate.ClassBulk: 0.3}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got %v", m)
	}
	if s := m.String(); s != "urgent=0.1,normal=0.6,bulk=0.3" {
		t.Errorf("String() = %q", s)
	}
	for _, bad := range []string{"urgent", "vip=1", "bulk=-1", "bulk=x"} {
		if _, err := ParseClassMix(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestResultJSONAndTable(t *testing.T) {
	r := &Result{
		Rate: 100, Duration: 2 * time.Second, ThroughputRPS: 98.5,
		Sent: 200, OK: 197, Rejected429: 3,
		P50: 1500 * time.Microsecond, P95: 4 * time.Millisecond, P99: 9 * time.Millisecond, Max: 12345678,
		SLOAttainment: 0.98, ClientCPUSeconds: 0.25, StatusCounts: map[int]int{200: 197, 429: 3},
		ByClass: map[infergate.Class]*ClassResult{
			infergate.ClassUrgent: {Sent: 20, OK: 20, P50: time.Millisecond, P99: 2 * time.Millisecond, Max: 3 * time.Millisecond, SLO: 50 * time.Millisecond, SLOAttainment: 1},
			infergate.ClassBulk:   {Sent: 180, OK: 177, Rejected429: 3, RetryAfterSeen: true, P99: 9 * time.Millisecond, SLO: DefaultSLO, SLOAttainment: 0.97},
		},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["p99_ms"] != 9.0 || raw["duration_ms"] != 2000.0 {
		t.Errorf("durations should be float ms: %s", b)
	}
	byClass, _ := raw["by_class"].(map[string]any)
	urgent, _ := byClass["urgent"].(map[string]any)
	if urgent == nil || urgent["slo_ms"] != 50.0 || byClass["bulk"] == nil {
		t.Errorf("by_class should be keyed by class name: %s", b)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, *r)
	}

	tab := r.Table()
	lines := strings.Split(strings.TrimRight(tab, "\n"), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[2], "urgent") || !strings.HasPrefix(lines[3], "bulk") || !strings.HasPrefix(lines[4], "all") {
		t.Fatalf("table:\n%s", tab)
	}
	for _, l := range lines[1:] {
		if len(l) != len(lines[1]) {
			t.Errorf("table rows not aligned:\n%s", tab)
			break
		}
	}
	if !strings.Contains(lines[0], "rate 100.0") || !strings.Contains(lines[0], "p99 9.00ms") {
		t.Errorf("summary line: %q", lines[0])
	}
	if strings.Contains(string(b), "server_p99_ms") || strings.Contains(tab, "server side") {
		t.Errorf("server-side figures shown without any: %s\n%s", b, tab)
	}

	// With the server's own times: JSON fields and a second summary line.
	r.ServerP50, r.ServerP99, r.PathP50, r.PathP99 = time.Millisecond, 7*time.Millisecond, 500*time.Microsecond, 2*time.Millisecond
	if b, err = json.Marshal(r); err != nil {
		t.Fatal(err)
	}
	back = Result{}
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(&back, r) {
		t.Errorf("round trip with server times (%v):\n got %+v\nwant %+v", err, back, *r)
	}
	if !strings.Contains(string(b), `"server_p99_ms":7`) || !strings.Contains(string(b), `"client_path_p99_ms":2`) {
		t.Errorf("server-side fields: %s", b)
	}
	if tab := r.Table(); !strings.Contains(tab, "server side p50 1.00ms  p99 7.00ms  client path p50 0.50ms  p99 2.00ms") {
		t.Errorf("table:\n%s", tab)
	}
}

func TestBurstFactor(t *testing.T) {
	cfg := Config{Pattern: "bursty", Warmup: time.Second, Duration: 3 * time.Second}
	for _, tt := range []struct {
		at   time.Duration
		want float64
	}{
		{0, 1}, {1500 * time.Millisecond, 1}, {2 * time.Second, 3}, {2999 * time.Millisecond, 3}, {3 * time.Second, 1}, {3900 * time.Millisecond, 1},
	} {
		if got := burstFactor(cfg, tt.at); got != tt.want {
			t.Errorf("at %v: %v, want %v", tt.at, got, tt.want)
		}
	}
	if got := burstFactor(Config{Duration: time.Second}, 500*time.Millisecond); got != 1 {
		t.Errorf("poisson: %v", got)
	}
	steps := Config{Pattern: "steps:0.05,0.8,0.05", Warmup: time.Second, Duration: 3 * time.Second}
	for _, tt := range []struct {
		at   time.Duration
		want float64
	}{{0, 0.05}, {1500 * time.Millisecond, 0.05}, {2 * time.Second, 0.8}, {3 * time.Second, 0.05}, {10 * time.Second, 0.05}} {
		if got := burstFactor(steps, tt.at); got != tt.want {
			t.Errorf("steps at %v: %v, want %v", tt.at, got, tt.want)
		}
	}
	// Phase edges that do not fall on whole nanoseconds (4 s in thirds,
	// 7 s in sevenths) must still be crossed.
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []Config{{Pattern: "bursty", Rate: 1000, Warmup: time.Second, Duration: 4 * time.Second},
		{Pattern: "steps:1,2,3,4,5,6,7", Rate: 1000, Duration: 7 * time.Second}} {
		c.factors, _ = phases(c.Pattern)
		n, at := 0, time.Duration(0)
		for at < c.Warmup+c.Duration {
			at = nextArrival(c, at, rng)
			n++
		}
		if n < 1000 {
			t.Errorf("%s: %d arrivals over %v at >= 1000/s", c.Pattern, n, c.Duration)
		}
	}
	for _, bad := range []string{"steps:", "steps:1,x", "steps:0", "steps:-1", "steps:Inf", "steps:NaN"} {
		if _, err := phases(bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
	if _, err := Run(t.Context(), Config{URL: "http://127.0.0.1:1", Model: "m", Rate: 1, Duration: time.Second, Pattern: "spiky"}); err == nil {
		t.Error("an unknown pattern was accepted")
	}
}

func TestBurstyArrivals(t *testing.T) {
	cfg := Config{Pattern: "bursty", Rate: 2000, Warmup: 500 * time.Millisecond, Duration: 3 * time.Second}
	rng := rand.New(rand.NewPCG(3, 4))
	var counts [4]int // warmup, calm, burst, calm
	for off := time.Duration(0); ; {
		off = nextArrival(cfg, off, rng)
		if off >= cfg.Warmup+cfg.Duration {
			break
		}
		switch t := off - cfg.Warmup; {
		case t < 0:
			counts[0]++
		case t < time.Second:
			counts[1]++
		case t < 2*time.Second:
			counts[2]++
		default:
			counts[3]++
		}
	}
	want := [4]float64{1000, 2000, 6000, 2000}
	for i, c := range counts {
		if math.Abs(float64(c)-want[i]) > 0.06*want[i] {
			t.Errorf("segment %d: %d arrivals, want about %.0f (all %v)", i, c, want[i], counts)
		}
	}
	if _, err := Run(t.Context(), Config{URL: "http://127.0.0.1:1", Model: "m", Concurrency: 2, Duration: time.Second, Pattern: "bursty"}); err == nil {
		t.Error("a closed loop with a pattern was accepted")
	}
}
