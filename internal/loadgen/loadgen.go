// Package loadgen is the load generator behind `infergate bench`: an
// open-loop, Poisson-arrival HTTP client for the KServe v2 infer endpoint
// (Run), a search for the highest rate that still meets a latency SLO
// (Goodput), and a measurement of a runtime session on its own, without
// HTTP or scheduling (Raw).
//
// Run is coordinated-omission safe: arrivals follow a precomputed schedule
// that never waits for responses, and each request's latency is measured
// from the moment it was scheduled to be sent, so a server stall (or a
// generator that falls behind) shows up in the latency of every request
// that should have been sent during it.
package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate"
)

// Defaults applied by Run to zero Config fields.
const (
	DefaultMaxInFlight = 4096
	DefaultTimeout     = 10 * time.Second
	DefaultSLO         = 100 * time.Millisecond
	DefaultInputName   = "input"
	DefaultOutputName  = "logits"
)

// ClassHeader is the request header that carries the request class.
const ClassHeader = "X-Infergate-Class"

// Values of Config.Transport.
const (
	TransportFast    = "fast"
	TransportNetHTTP = "nethttp"
)

// DefaultItemShape is the shape of one item of the reference model's input
// (the request tensor is [1, 768]).
func DefaultItemShape() []int64 { return []int64{768} }

// ClassMix weights the request classes, e.g. {urgent: 0.1, normal: 0.6,
// bulk: 0.3}. Weights need not sum to 1. An empty mix sends every request
// as normal.
type ClassMix map[infergate.Class]float64

// ParseClassMix parses "urgent=0.1,normal=0.6,bulk=0.3" (class names as
// accepted by infergate.ParseClass). An empty string is an empty mix.
func ParseClassMix(s string) (ClassMix, error) {
	m := ClassMix{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("loadgen: class mix entry %q: want class=weight", part)
		}
		c, err := infergate.ParseClass(name)
		if err != nil {
			return nil, fmt.Errorf("loadgen: class mix: %w", err)
		}
		w, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || w < 0 {
			return nil, fmt.Errorf("loadgen: class mix entry %q: bad weight", part)
		}
		m[c] += w
	}
	return m, nil
}

// String formats the mix as ParseClassMix accepts it, highest priority first.
func (m ClassMix) String() string {
	var parts []string
	for _, c := range infergate.Classes {
		if w, ok := m[c]; ok {
			parts = append(parts, c.String()+"="+strconv.FormatFloat(w, 'g', -1, 64))
		}
	}
	return strings.Join(parts, ",")
}

// Config configures one load-generation run.
type Config struct {
	// URL is the server's base URL, e.g. "http://localhost:8080"; requests go
	// to {URL}/v2/models/{Model}/infer.
	URL   string
	Model string
	// Rate is the mean arrival rate in requests per second (Poisson); with
	// Pattern "bursty", the calm rate.
	Rate float64
	// Pattern shapes the rate over the measured window: "poisson" (the
	// default: Rate throughout); "bursty" (calm at Rate for the first
	// third, a burst at 3x Rate for the second, calm again for the last);
	// or "steps:F1,F2,..." (equal phases at F1 x Rate, F2 x Rate, ...).
	// The warmup runs at the first phase's rate. Arrivals are Poisson at
	// the rate of the moment.
	Pattern string
	factors []float64 // Pattern's, once checked
	// Duration is the measured window; Warmup precedes it. Requests
	// scheduled during Warmup are sent but not counted.
	Duration, Warmup time.Duration
	// Mix weights the request classes; empty sends everything as normal.
	Mix ClassMix
	// Payload is "json" (default) or "binary" (Triton binary tensor
	// extension).
	Payload string
	// InputName is the input tensor's name (default "input"). ItemShape is
	// the shape of one item, without the batch dimension (default [768]);
	// each request carries one item, so its tensor has shape
	// [1, ItemShape...]. The data type is always FP32.
	InputName string
	ItemShape []int64
	// OutputName is the output requested as binary data in binary payloads
	// (default "logits"). JSON payloads request all outputs.
	OutputName string
	// SLO is the latency objective per class; classes missing from the map
	// get DefaultSLO (100ms).
	SLO map[infergate.Class]time.Duration
	// Seed seeds the arrival times, class choices and payload data.
	Seed uint64
	// MaxInFlight caps outstanding requests (default 4096). A request whose
	// scheduled send finds the cap reached is not sent and counts as
	// Dropped (dropped by the client).
	MaxInFlight int
	// Timeout bounds each request, and the wait for outstanding requests at
	// the end of the run (default 10s).
	Timeout time.Duration
	// Concurrency, if > 0, makes the run closed-loop: that many workers
	// each send a request as soon as their last one is answered, and Rate
	// is ignored. Use it to measure throughput at saturation without the
	// cost of rejected requests that an open loop above capacity pays.
	Concurrency int
	// ServerStats, if set, reads the server's counters; Run calls it at the
	// start and at the end of the measured window and reports both and
	// their difference (Result.ServerStart, ServerEnd, ServerDelta), so
	// that server-side figures cover the same window as ThroughputRPS.
	ServerStats func(ctx context.Context) (map[string]float64, error)
	// Transport picks the HTTP client: "fast" (default) or "nethttp".
	//
	// "fast" is a lean HTTP/1.1 client built for this generator: a pool of
	// keep-alive TCP connections (at most one per request in flight, so at
	// most MaxInFlight), each request written with one conn.Write of bytes
	// serialized before the run, and the response parsed in place; it
	// costs a fraction of net/http's CPU per request, which matters when
	// the generator shares the machine with the server it measures. It
	// speaks plain http only: for an https URL, Run uses nethttp instead.
	//
	// "nethttp" uses net/http: Client if set, else a client with an
	// HTTP/1.1-only transport that keeps MaxInFlight idle connections.
	// Setting Client implies nethttp, whatever Transport says.
	//
	// Either way Run closes the connections it opened before returning.
	Transport string
	// Client is the HTTP client to use with the nethttp transport (see
	// Transport); optional. Run uses it as is and leaves its connections
	// open.
	Client *http.Client

	// testHookDispatch, when set, runs in the dispatcher just before request
	// seq is sent (tests use it to make the dispatcher fall behind).
	testHookDispatch func(seq int)
}

func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		return c, errors.New("loadgen: URL is required")
	}
	if c.Model == "" {
		return c, errors.New("loadgen: Model is required")
	}
	if c.Concurrency < 0 {
		return c, fmt.Errorf("loadgen: concurrency must be >= 0, got %d", c.Concurrency)
	}
	if !(c.Rate > 0) && c.Concurrency == 0 {
		return c, fmt.Errorf("loadgen: rate must be > 0, got %v", c.Rate)
	}
	if c.Duration <= 0 {
		return c, fmt.Errorf("loadgen: duration must be > 0, got %v", c.Duration)
	}
	if c.Warmup < 0 {
		return c, fmt.Errorf("loadgen: warmup must be >= 0, got %v", c.Warmup)
	}
	fs, err := phases(c.Pattern)
	if err != nil {
		return c, err
	}
	c.factors = fs
	if c.Pattern != "" && c.Pattern != "poisson" && c.Concurrency > 0 {
		return c, fmt.Errorf("loadgen: a closed loop (concurrency) has no arrival pattern")
	}
	switch strings.ToLower(c.Payload) {
	case "", "json":
		c.Payload = "json"
	case "binary":
		c.Payload = "binary"
	default:
		return c, fmt.Errorf("loadgen: payload %q: want json or binary", c.Payload)
	}
	switch strings.ToLower(c.Transport) {
	case "", TransportFast:
		c.Transport = TransportFast
	case TransportNetHTTP:
		c.Transport = TransportNetHTTP
	default:
		return c, fmt.Errorf("loadgen: transport %q: want %s or %s", c.Transport, TransportFast, TransportNetHTTP)
	}
	if c.InputName == "" {
		c.InputName = DefaultInputName
	}
	if c.OutputName == "" {
		c.OutputName = DefaultOutputName
	}
	if len(c.ItemShape) == 0 {
		c.ItemShape = DefaultItemShape()
	}
	for _, d := range c.ItemShape {
		if d <= 0 {
			return c, fmt.Errorf("loadgen: item shape %v: dimensions must be > 0", c.ItemShape)
		}
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	slo := make(map[infergate.Class]time.Duration, infergate.NumClasses)
	for _, cl := range infergate.Classes {
		slo[cl] = DefaultSLO
		if d, ok := c.SLO[cl]; ok && d > 0 {
			slo[cl] = d
		}
	}
	c.SLO = slo
	return c, nil
}

// classPicker draws classes according to a ClassMix.
type classPicker struct {
	classes []infergate.Class
	cum     []float64
}

func newClassPicker(m ClassMix) (*classPicker, error) {
	p := &classPicker{}
	total := 0.0
	for c, w := range m {
		if int(c) >= infergate.NumClasses {
			return nil, fmt.Errorf("loadgen: class mix: unknown class %v", c)
		}
		if w < 0 || w != w {
			return nil, fmt.Errorf("loadgen: class mix: bad weight %v for %v", w, c)
		}
	}
	for _, c := range infergate.Classes { // fixed order: deterministic for a seed
		if w := m[c]; w > 0 {
			total += w
			p.classes = append(p.classes, c)
			p.cum = append(p.cum, total)
		}
	}
	if len(p.classes) == 0 {
		p.classes = []infergate.Class{infergate.ClassNormal}
		p.cum = []float64{1}
	}
	return p, nil
}

func (p *classPicker) pick(rng *rand.Rand) infergate.Class {
	if len(p.classes) == 1 {
		return p.classes[0]
	}
	x := rng.Float64() * p.cum[len(p.cum)-1]
	for i, c := range p.cum {
		if x < c {
			return p.classes[i]
		}
	}
	return p.classes[len(p.classes)-1]
}

func (p *classPicker) has(c infergate.Class) bool {
	for _, x := range p.classes {
		if x == c {
			return true
		}
	}
	return false
}

// classStats accumulates the outcomes of one class's measured requests.
type classStats struct {
	sent, ok, rejected, errs, dropped, withinSLO int
	retryAfter                                   bool
	lats                                         []time.Duration // OK responses only
	serverLats                                   []time.Duration // their server time, where reported
	paths                                        []time.Duration // latency minus server time, where reported
}

type collector struct {
	mu      sync.Mutex
	slo     [infergate.NumClasses]time.Duration
	classes [infergate.NumClasses]classStats
	status  map[int]int
}

// record accounts one completed request. status is the HTTP status, or 0
// for a transport error (err != nil).
func (c *collector) record(cl infergate.Class, status int, retryAfter bool, err error, lat, server time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.classes[cl]
	s.sent++
	c.status[status]++
	switch {
	case err != nil:
		s.errs++
	case status == http.StatusOK:
		s.ok++
		s.lats = append(s.lats, lat)
		if server >= 0 {
			s.serverLats = append(s.serverLats, server)
			s.paths = append(s.paths, max(lat-server, 0))
		}
		if lat <= c.slo[cl] {
			s.withinSLO++
		}
	case status == http.StatusTooManyRequests:
		s.rejected++
		s.retryAfter = s.retryAfter || retryAfter
	default:
		s.errs++
	}
}

func (c *collector) drop(cl infergate.Class) {
	c.mu.Lock()
	c.classes[cl].dropped++
	c.mu.Unlock()
}

// newTransport returns an HTTP/1.1-only transport that keeps enough idle
// connections for maxInFlight concurrent requests to one host.
func newTransport(maxInFlight int) *http.Transport {
	return &http.Transport{
		Proxy: nil, // a benchmark talks to the server directly
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        maxInFlight,
		MaxIdleConnsPerHost: maxInFlight,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		// A non-nil empty map disables HTTP/2 over TLS.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
}

// requester issues one request, pre-built body number body of class cl,
// and reads the response fully. It returns the HTTP status (0 with an
// error on a transport error or timeout) and whether the response carried
// Retry-After. Implementations: sender (net/http) and fastClient.
type requester interface {
	// server is the server's own time from its ServerTimeHeader, -1
	// without one.
	do(ctx context.Context, cl infergate.Class, body int) (status int, retryAfter bool, server time.Duration, err error)
}

// newRequester returns the requester for cfg (defaults applied) and a
// function that closes the connections it opened. Requests under ctx are
// canceled when ctx ends.
func newRequester(ctx context.Context, cfg Config, endpoint string, pl *payload, classes []infergate.Class) (requester, func(), error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Transport == TransportFast && cfg.Client == nil && u.Scheme == "http" {
		port := u.Port()
		if port == "" {
			port = "80"
		}
		pl.buildRequests(u.RequestURI(), strings.TrimSuffix(u.Host, ":"), classes)
		fc := newFastClient(ctx, net.JoinHostPort(u.Hostname(), port), &pl.requests, cfg.Timeout)
		return fc, fc.close, nil
	}
	client, closeIdle := cfg.Client, func() {}
	if client == nil {
		tr := newTransport(cfg.MaxInFlight)
		client, closeIdle = &http.Client{Transport: tr}, tr.CloseIdleConnections
	}
	snd := &sender{client: client, endpoint: endpoint, payload: pl, timeout: cfg.Timeout}
	for _, cl := range infergate.Classes {
		snd.classValue[cl] = []string{cl.String()}
	}
	return snd, closeIdle, nil
}

// sender is the net/http requester.
type sender struct {
	client     *http.Client
	endpoint   string
	payload    *payload
	timeout    time.Duration
	classValue [infergate.NumClasses][]string
}

func (s *sender) do(ctx context.Context, cl infergate.Class, body int) (int, bool, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(s.payload.bodies[body]))
	if err != nil {
		return 0, false, -1, err
	}
	req.Header = s.payload.header(s.classValue[cl])
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, false, -1, err
	}
	// Read the body fully so the connection goes back to the pool.
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false, -1, err
	}
	return resp.StatusCode, resp.Header.Get("Retry-After") != "", parseServerMS(resp.Header.Get(ServerTimeHeader)), nil
}

// ServerTimeHeader is the response header in which the server reports its
// own time for an inference request, in milliseconds: from the handler's
// start to the response's encoding, without the network and the client.
const ServerTimeHeader = "X-Infergate-Server-Ms"

// parseServerMS parses a ServerTimeHeader value; -1 if empty or invalid
// (0 is a valid time, rounded below the header's resolution).
func parseServerMS(v string) time.Duration {
	if v == "" {
		return -1
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 1e9 || math.IsNaN(f) {
		return -1
	}
	return time.Duration(f * float64(time.Millisecond))
}

// Run drives the server at cfg.Rate requests per second for cfg.Warmup +
// cfg.Duration and reports on the requests scheduled in the measured
// window. It waits for outstanding requests (up to cfg.Timeout, then
// cancels them) before returning, so no request outlives the call.
//
// If ctx is canceled, Run stops sending, cancels outstanding requests and
// returns the partial result together with ctx's error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	picker, err := newClassPicker(cfg.Mix)
	if err != nil {
		return nil, err
	}
	base, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("loadgen: bad URL %q: want http(s)://host[:port]", cfg.URL)
	}
	endpoint := base.String() + "/v2/models/" + url.PathEscape(cfg.Model) + "/infer"
	pl, err := buildPayload(cfg)
	if err != nil {
		return nil, err
	}

	coll := &collector{status: map[int]int{}}
	for _, cl := range infergate.Classes {
		coll.slo[cl] = cfg.SLO[cl]
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	snd, closeConns, err := newRequester(runCtx, cfg, endpoint, pl, picker.classes)
	if err != nil {
		return nil, err
	}
	defer closeConns()
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	sem := make(chan struct{}, cfg.MaxInFlight)
	var wg sync.WaitGroup
	var okInWindow atomic.Int64 // 200s completed in the measured window

	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	var cpuStart float64
	cpuTaken := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	var statsWG sync.WaitGroup
	var statsStart, statsEnd map[string]float64
	if cfg.ServerStats != nil {
		statsWG.Add(1)
		go func() {
			defer statsWG.Done()
			if !sleepUntil(runCtx, measureFrom) {
				return
			}
			st, err := cfg.ServerStats(runCtx)
			if err != nil || !sleepUntil(runCtx, end) {
				return
			}
			en, err := cfg.ServerStats(runCtx)
			if err == nil {
				statsStart, statsEnd = st, en
			}
		}()
	}

	stoppedAt := end
	if cfg.Concurrency > 0 {
		// Closed loop: each worker sends its next request as soon as the
		// last one is answered, so the server is kept saturated without
		// being overrun. Latency runs from the actual send.
		for w := range cfg.Concurrency {
			wrng := rand.New(rand.NewPCG(cfg.Seed+uint64(w)+1, cfg.Seed^0x9e3779b97f4a7c15))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					sent := time.Now()
					if !sent.Before(end) || runCtx.Err() != nil {
						return
					}
					cl := picker.pick(wrng)
					status, retryAfter, server, err := snd.do(runCtx, cl, wrng.IntN(len(pl.bodies)))
					now := time.Now()
					if err == nil && status == http.StatusOK && !now.Before(measureFrom) && now.Before(end) {
						okInWindow.Add(1)
					}
					if !sent.Before(measureFrom) {
						coll.record(cl, status, retryAfter, err, now.Sub(sent), server)
					}
				}
			}()
		}
		if sleepUntil(ctx, measureFrom) {
			cpuStart, cpuTaken = ProcessCPUSeconds(), true
		}
		if !sleepUntil(ctx, end) {
			stoppedAt = time.Now()
		}
	} else {
		var offset time.Duration
		seq := 0
	dispatch:
		for ; ; seq++ {
			offset = nextArrival(cfg, offset, rng)
			sched := start.Add(offset)
			if !sched.Before(end) {
				break
			}
			cl := picker.pick(rng)
			body := rng.IntN(len(pl.bodies))
			if wait := time.Until(sched); wait > 0 {
				timer.Reset(wait)
				select {
				case <-ctx.Done():
					stoppedAt = time.Now()
					break dispatch
				case <-timer.C:
				}
			} else if ctx.Err() != nil {
				stoppedAt = time.Now()
				break
			}
			measured := !sched.Before(measureFrom)
			if measured && !cpuTaken {
				cpuStart, cpuTaken = ProcessCPUSeconds(), true
			}
			if cfg.testHookDispatch != nil {
				cfg.testHookDispatch(seq)
			}
			select {
			case sem <- struct{}{}:
			default:
				if measured {
					coll.drop(cl)
				}
				continue
			}
			wg.Add(1)
			go func() {
				defer func() {
					<-sem
					wg.Done()
				}()
				status, retryAfter, server, err := snd.do(runCtx, cl, body)
				// Latency runs from the scheduled send time, not the actual
				// one: coordinated-omission safe.
				now := time.Now()
				lat := now.Sub(sched)
				if err == nil && status == http.StatusOK && !now.Before(measureFrom) && now.Before(end) {
					okInWindow.Add(1)
				}
				if measured {
					coll.record(cl, status, retryAfter, err, lat, server)
				}
			}()
		}
	}
	if !cpuTaken {
		cpuStart = ProcessCPUSeconds()
	}

	// Wait for outstanding requests, up to Timeout; then cancel the rest.
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	grace := time.NewTimer(cfg.Timeout)
	select {
	case <-done:
	case <-grace.C:
		cancelRun()
		<-done
	}
	grace.Stop()
	cpu := ProcessCPUSeconds() - cpuStart
	statsWG.Wait()

	window := stoppedAt.Sub(measureFrom)
	if window < 0 {
		window = 0
	}
	res := coll.result(cfg, picker, window)
	if window > 0 {
		res.ThroughputRPS = float64(okInWindow.Load()) / window.Seconds()
	}
	res.ClientCPUSeconds = cpu
	if statsStart != nil && statsEnd != nil {
		res.ServerStart, res.ServerEnd = statsStart, statsEnd
		res.ServerDelta = make(map[string]float64, len(statsEnd))
		for k, v := range statsEnd {
			res.ServerDelta[k] = v - statsStart[k]
		}
	}
	return res, ctx.Err()
}

// sleepUntil waits until t or until ctx ends; it reports whether t came.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// result aggregates the collected outcomes. Call it after every request
// has completed.
func (c *collector) result(cfg Config, picker *classPicker, window time.Duration) *Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := &Result{
		Rate:         cfg.Rate,
		Duration:     window,
		ByClass:      map[infergate.Class]*ClassResult{},
		StatusCounts: make(map[int]int, len(c.status)),
	}
	for k, v := range c.status {
		res.StatusCounts[k] = v
	}
	var all, server, paths []time.Duration
	withinSLO := 0
	for _, cl := range infergate.Classes {
		s := &c.classes[cl]
		if s.sent == 0 && s.dropped == 0 && !picker.has(cl) {
			continue
		}
		lats := s.lats
		slices.Sort(lats)
		cr := &ClassResult{
			Sent: s.sent, OK: s.ok, Rejected429: s.rejected, Errors: s.errs, Dropped: s.dropped,
			P50: quantile(lats, 0.50), P95: quantile(lats, 0.95), P99: quantile(lats, 0.99),
			Max: quantile(lats, 1), SLO: c.slo[cl], RetryAfterSeen: s.retryAfter,
		}
		if n := s.sent + s.dropped; n > 0 {
			cr.SLOAttainment = float64(s.withinSLO) / float64(n)
		}
		res.ByClass[cl] = cr
		res.Sent += s.sent
		res.OK += s.ok
		res.Rejected429 += s.rejected
		res.Errors += s.errs
		res.Dropped += s.dropped
		withinSLO += s.withinSLO
		all = append(all, s.lats...)
		server = append(server, s.serverLats...)
		paths = append(paths, s.paths...)
	}
	slices.Sort(all)
	res.P50, res.P95, res.P99, res.Max = quantile(all, 0.50), quantile(all, 0.95), quantile(all, 0.99), quantile(all, 1)
	if len(server) == len(all) {
		slices.Sort(server)
		res.ServerP50, res.ServerP99 = quantile(server, 0.50), quantile(server, 0.99)
		slices.Sort(paths)
		res.PathP50, res.PathP99 = quantile(paths, 0.50), quantile(paths, 0.99)
	}
	if n := res.Sent + res.Dropped; n > 0 {
		res.SLOAttainment = float64(withinSLO) / float64(n)
	}
	return res
}

// quantile returns the nearest-rank q-quantile of sorted (0 if empty).
func quantile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n)-1e-9)) - 1
	i = max(0, min(i, n-1))
	return sorted[i]
}

// nextArrival draws the arrival after offset from a Poisson process whose
// rate is Rate times burstFactor. A draw that would cross a change of rate
// starts again at the change, with the new rate (exact, since the process
// has no memory).
func nextArrival(cfg Config, offset time.Duration, rng *rand.Rand) time.Duration {
	fs := cfg.factors
	if fs == nil {
		fs, _ = phases(cfg.Pattern)
	}
	for {
		i := phaseAt(cfg, len(fs), offset)
		next := offset + time.Duration(rng.ExpFloat64()/(cfg.Rate*fs[i])*float64(time.Second))
		if i == len(fs)-1 {
			return next
		}
		// The first offset of the next phase: rounded up, so that phaseAt
		// puts it there (a truncated edge would stay in phase i forever).
		n := time.Duration(len(fs))
		edge := cfg.Warmup + (cfg.Duration*time.Duration(i+1)+n-1)/n
		if next < edge {
			return next
		}
		offset = max(edge, offset+1)
	}
}

// phases returns the rate factors of pattern's equal phases.
func phases(pattern string) ([]float64, error) {
	switch pattern {
	case "", "poisson":
		return []float64{1}, nil
	case "bursty":
		return []float64{1, 3, 1}, nil
	}
	spec, ok := strings.CutPrefix(pattern, "steps:")
	if !ok {
		return nil, fmt.Errorf("loadgen: pattern %q: want poisson, bursty or steps:F1,F2,...", pattern)
	}
	var out []float64
	for _, f := range strings.Split(spec, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(v > 0) || math.IsInf(v, 0) || len(out) >= 100 {
			return nil, fmt.Errorf("loadgen: pattern %q: want up to 100 rate factors > 0, such as steps:0.05,0.8,0.05", pattern)
		}
		out = append(out, v)
	}
	return out, nil
}

// phaseAt is the phase of n at offset from the start of the run (warmup:
// the first).
func phaseAt(cfg Config, n int, offset time.Duration) int {
	t := offset - cfg.Warmup
	if t < 0 || cfg.Duration <= 0 {
		return 0
	}
	return min(int(t*time.Duration(n)/cfg.Duration), n-1)
}

// burstFactor is the multiple of Rate the pattern asks for at offset from
// the start of the run (warmup included).
func burstFactor(cfg Config, offset time.Duration) float64 {
	fs, err := phases(cfg.Pattern)
	if err != nil {
		return 1
	}
	return fs[phaseAt(cfg, len(fs), offset)]
}
