// Package dashboard serves a live dashboard of the server: a single HTML
// page embedded in the binary (hand-written JS drawing on <canvas>, no
// external libraries) and the JSON endpoint it polls every second.
//
// All figures come from the server's Prometheus registry. Every Interval
// the dashboard gathers it and turns the difference from the previous
// gathering into one point per model (see [ModelPoint] for what each figure
// is and which metric it comes from). The last Keep points are kept.
//
// # Endpoints
//
//	GET /              the page (text/html)
//	GET /v1/dashboard  the data (application/json), a [Response]
//
// /v1/dashboard takes two optional query parameters, both non-negative
// decimal integers: since=<unix ms> returns only the points taken after
// that time (the page passes the time of the last point it has), and
// after=<event id> returns only the events with a greater ID. Anything else
// in them is a 400.
//
// # JSON
//
//	{
//	  "now": 1717000000000,          // unix ms of the latest point
//	  "interval_ms": 1000,           // sampling period
//	  "window_ms": 600000,           // Keep * Interval: the time axis
//	  "models": ["resnet"],
//	  "classes": ["urgent", "normal", "bulk"],
//	  "modes": ["realtime", "hybrid", "batch"],
//	  "slo": {"resnet": {"urgent": 50}},           // ms; no entry: no SLO
//	  "points": [{
//	    "t": 1717000000000, "dt": 1,               // unix ms; seconds since the previous point
//	    "models": {"resnet": {
//	      "ok_rps":   {"urgent": 12.5, "normal": 40, "bulk": 0},
//	      "fail_rps": {"urgent": 0, "normal": 1, "bulk": 0},
//	      "p50_ms":   {"urgent": 3.1, "normal": 8.2, "bulk": null},
//	      "p99_ms":   {"urgent": 9.7, "normal": 30.4, "bulk": null},
//	      "latency_approx": {"bulk": true},        // only where queue+compute was summed
//	      "batch_mean": 6.2,
//	      "queue": {"urgent": 0, "normal": 3, "bulk": 120},
//	      "instances": 2, "utilization": 0.41,
//	      "cost_per_1k": {"realtime": 0.012, "hybrid": 0.004, "all": 0.006},
//	      "saving": 0.63
//	    }}
//	  }],
//	  "events": [ /* infergate.Event, oldest first, at most 100 */ ]
//	}
//
// A figure that cannot be computed for an interval (no observations, no
// metric, a zero denominator) is null; the first point has gauges only.
package dashboard

import (
	"context"
	_ "embed"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
)

//go:embed page.html
var page []byte

// Events is the part of the event log the dashboard reads;
// internal/events.Log implements it.
type Events interface {
	// List returns, oldest first, at most limit of the newest events with
	// an ID greater than after, of model ("" for all).
	List(after int64, limit int, model string) []infergate.Event
}

// maxEvents is how many events one response carries at most.
const maxEvents = 100

// Options configure a Dashboard.
type Options struct {
	// Gatherer is the server's registry. Required.
	Gatherer prometheus.Gatherer
	// Events are shown as markers and listed. Optional.
	Events Events
	// Clock stamps the points and times Run. Optional. Defaults to the wall
	// clock.
	Clock clock.Clock
	// Interval is the sampling period. Optional. Defaults to 1s.
	Interval time.Duration
	// Keep is how many points are kept. Optional. Defaults to 600.
	Keep int
	// SLO returns a class's latency objective for a model, 0 for none.
	// Optional.
	SLO func(model, class string) time.Duration
	// PricePerInstanceHour prices the one-by-one baseline of the saving.
	// It should be the price the cost counter was recorded at. Optional:
	// when 0, the saving compares busy time instead of cost.
	PricePerInstanceHour float64
	// Logger is optional. Defaults to discarding.
	Logger *slog.Logger
}

// Dashboard samples the registry and serves the page and its data. It is
// safe for concurrent use.
type Dashboard struct {
	opt Options
	clk clock.Clock
	log *slog.Logger

	sampleMu sync.Mutex // serializes Sample; taken before mu
	prev     *snapshot
	prevT    time.Time
	acc      map[string]*savingAcc

	mu     sync.RWMutex
	points []Point // oldest first, at most opt.Keep
	models []string
}

// New returns a dashboard. It samples nothing until Run or Sample is
// called.
func New(opt Options) *Dashboard {
	if opt.Interval <= 0 {
		opt.Interval = time.Second
	}
	if opt.Keep <= 0 {
		opt.Keep = 600
	}
	d := &Dashboard{opt: opt, clk: opt.Clock, log: opt.Logger, acc: map[string]*savingAcc{}}
	if d.clk == nil {
		d.clk = clock.Real{}
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("component", "dashboard")
	return d
}

// Run samples now and then every Interval until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	for {
		d.Sample()
		t := d.clk.NewTimer(d.opt.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// Sample gathers the registry now and appends one point.
func (d *Dashboard) Sample() {
	d.sampleMu.Lock()
	defer d.sampleMu.Unlock()
	cur, err := gather(d.opt.Gatherer)
	if err != nil {
		d.log.Warn("gather metrics", "err", err)
	}
	now := d.clk.Now()
	pt := Point{T: now.UnixMilli(), Models: make(map[string]*ModelPoint, len(cur.models))}
	if d.prev != nil {
		pt.DT = now.Sub(d.prevT).Seconds()
	}
	for _, m := range cur.models {
		acc := d.acc[m]
		if acc == nil {
			acc = &savingAcc{}
			d.acc[m] = acc
		}
		pt.Models[m] = compute(d.prev, cur, m, pt.DT, d.opt.PricePerInstanceHour, acc)
	}
	d.prev, d.prevT = cur, now

	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.points) >= d.opt.Keep {
		d.points = slices.Delete(d.points, 0, len(d.points)-d.opt.Keep+1)
	}
	d.points = append(d.points, pt)
	for _, m := range cur.models {
		if i, found := slices.BinarySearch(d.models, m); !found {
			d.models = slices.Insert(d.models, i, m)
		}
	}
}

// Handler serves the page at / and its data at /v1/dashboard.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /v1/dashboard", d.serveData)
	return mux
}

func (d *Dashboard) serveData(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := parseNonNegative(q.Get("since"))
	if err != nil {
		http.Error(w, "since: "+err.Error(), http.StatusBadRequest)
		return
	}
	after, err := parseNonNegative(q.Get("after"))
	if err != nil {
		http.Error(w, "after: "+err.Error(), http.StatusBadRequest)
		return
	}
	resp := d.response(since, after)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err := json.NewEncoder(w).Encode(resp); err != nil {
		d.log.Debug("write dashboard data", "err", err)
	}
}

// Response is the body of GET /v1/dashboard; see the package doc.
type Response struct {
	Now        int64                         `json:"now"`
	IntervalMS int64                         `json:"interval_ms"`
	WindowMS   int64                         `json:"window_ms"`
	Models     []string                      `json:"models"`
	Classes    []string                      `json:"classes"`
	Modes      []string                      `json:"modes"`
	SLO        map[string]map[string]float64 `json:"slo"`
	Points     []Point                       `json:"points"`
	Events     []infergate.Event             `json:"events"`
}

// Point is one sample: a figure per model for the interval that ended at T.
type Point struct {
	T      int64                  `json:"t"`  // unix ms
	DT     float64                `json:"dt"` // seconds since the previous point; 0 for the first
	Models map[string]*ModelPoint `json:"models"`
}

// ModelPoint is one model's figures for an interval. Rates and quantiles
// are of the interval, not since start; maps are keyed by class (or mode).
type ModelPoint struct {
	// OKRate is the ok requests per second, from infergate_requests_total
	// {outcome="ok"}.
	OKRate map[string]Num `json:"ok_rps"`
	// FailRate is the requests per second of every other outcome
	// (rejected, shed, expired, canceled, error).
	FailRate map[string]Num `json:"fail_rps"`
	// P50 and P99 are latency quantiles in ms, from the interval's bucket
	// counts of infergate_request_latency_seconds (queue + compute),
	// interpolated within buckets. Where that histogram is absent they are
	// the sums of the quantiles of infergate_request_queue_seconds and
	// infergate_request_compute_seconds, an approximation (an upper bound
	// when both are comonotonic), and LatencyApprox marks the class.
	P50           map[string]Num  `json:"p50_ms"`
	P99           map[string]Num  `json:"p99_ms"`
	LatencyApprox map[string]bool `json:"latency_approx,omitempty"`
	// Batch is the mean items per successful batch: the growth of
	// infergate_inference_count_total over that of
	// infergate_execution_count_total less infergate_batch_failures_total
	// (the infergate_batch_size histogram's mean if the counters are
	// absent).
	Batch Num `json:"batch_mean"`
	// Queue is infergate_queue_length at the sample.
	Queue map[string]Num `json:"queue"`
	// Instances is infergate_instances at the sample.
	Instances Num `json:"instances"`
	// Utilization is the growth of infergate_instance_busy_seconds_total
	// over the interval times the mean instance count, capped at 1 (busy
	// time is counted when a batch ends); the since-start gauge
	// infergate_instance_utilization when the counter is absent.
	Utilization Num `json:"utilization"`
	// CostPer1k is USD per 1000 ok requests by mode, and "all": the growth
	// of infergate_cost_usd_total{mode} over the ok requests of the
	// interval. The cost counter is by class and mode, the request counter
	// by class: a class's ok requests are shared out among modes in
	// proportion to its cost in each, which is exact whenever a class ran
	// in one mode during the interval.
	CostPer1k map[string]Num `json:"cost_per_1k"`
	// Saving is the running saving since the dashboard started:
	// 1 - actual cost / one-by-one cost, where the one-by-one cost of the
	// interval's items (infergate_inference_count_total) is their number
	// times the measured batch-1 latency (gauge
	// infergate_batch_latency_seconds{batch_size="1"}) times the price, and
	// the actual cost is the growth of infergate_cost_usd_total. With no
	// price, busy time (infergate_instance_busy_seconds_total) stands for
	// cost. Intervals without a batch-1 latency are left out; null until
	// one is seen.
	Saving Num `json:"saving"`
}

func (d *Dashboard) response(since, after int64) Response {
	d.mu.RLock()
	models := slices.Clone(d.models)
	i, _ := slices.BinarySearchFunc(d.points, since, func(p Point, t int64) int {
		if p.T <= t {
			return -1
		}
		return +1
	})
	pts := append([]Point{}, d.points[i:]...) // points are never modified once appended
	var now int64
	if n := len(d.points); n > 0 {
		now = d.points[n-1].T
	}
	d.mu.RUnlock()

	r := Response{
		Now: now, IntervalMS: d.opt.Interval.Milliseconds(), WindowMS: (d.opt.Interval * time.Duration(d.opt.Keep)).Milliseconds(),
		Models: models, Classes: classes, Modes: modes, SLO: map[string]map[string]float64{}, Points: pts,
		Events: []infergate.Event{},
	}
	if d.opt.SLO != nil {
		for _, m := range models {
			for _, c := range classes {
				if s := d.opt.SLO(m, c); s > 0 {
					if r.SLO[m] == nil {
						r.SLO[m] = map[string]float64{}
					}
					r.SLO[m][c] = float64(s) / float64(time.Millisecond)
				}
			}
		}
	}
	if d.opt.Events != nil {
		if ev := d.opt.Events.List(after, maxEvents, ""); ev != nil {
			r.Events = ev
		}
	}
	return r
}

// maxQueryDigits bounds since and after: 18 digits always fit an int64.
const maxQueryDigits = 18

// errQuery is the error for a malformed since or after.
type errQuery string

func (e errQuery) Error() string { return string(e) }

// parseNonNegative parses an optional query value: "" is 0, otherwise 1 to
// 18 ASCII digits.
func parseNonNegative(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if len(s) > maxQueryDigits {
		return 0, errQuery("want at most 18 digits")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errQuery("want a non-negative decimal integer")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// Num is a figure that encodes as a JSON number, or null when it is NaN or
// infinite (not computable). It is rounded to 6 significant digits.
type Num float64

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, f, 'g', 6, 64), nil
}

// UnmarshalJSON implements json.Unmarshaler: null is NaN.
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Num(math.NaN())
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = Num(f)
	return nil
}
