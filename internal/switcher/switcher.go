// Package switcher moves a class's traffic between serving modes while the
// server runs. Per model and class, a controller watches measured triggers
// (load, latency against the SLO, cost per request), waits for a trigger to
// hold for a switch delay, and then shifts the class's requests to the new
// mode gradually (20%, 50%, 80%, 100% by default), comparing the two shares
// at each step and rolling back when the new one is worse. Every decision
// is an event.
//
// A mode is served by a scheduler lane whose policy is in that mode: for
// the normal class, realtime is the urgent lane, hybrid its own lane and
// batch the bulk lane (batching.Scheduler.SubmitLane). Figures are what the
// switcher measures on the requests it routes: end-to-end time in the
// scheduler, errors, and each request's share of its batch's measured
// execution time priced at the instance price. Predictions come from the
// scheduler's live per-batch-size latency model.
package switcher

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/perfmodel"
)

// Target is the scheduler the switcher routes through.
type Target interface {
	SubmitLane(ctx context.Context, c, lane infergate.Class, inputs []infergate.Tensor, items int, timeout time.Duration) (*batching.Response, error)
	Policy(c infergate.Class) batching.Policy
	SetPolicy(c infergate.Class, p batching.Policy) error
	Latency() *perfmodel.Model
	Instances() int
}

// Recorder records decisions (internal/events.Log).
type Recorder interface {
	Add(e infergate.Event) infergate.Event
}

// Config configures the controller of one class.
type Config struct {
	// SLO is the class's p99 latency target.
	SLO time.Duration `yaml:"slo" json:"slo"`
	// LowRPS and HighRPS are the load trigger's thresholds in requests per
	// second: above HighRPS a class served in realtime moves to hybrid
	// (batching pays), below LowRPS a class in hybrid moves to realtime
	// (batches stay near one request, and waiting for company only adds
	// latency). 0 derives them each tick from the live latency model: the
	// realtime capacity instances / (batch-of-one latency + measured
	// per-request overhead), of which HighRPS is half and LowRPS a fifth.
	LowRPS  float64 `yaml:"low_rps" json:"low_rps"`
	HighRPS float64 `yaml:"high_rps" json:"high_rps"`
	// SwitchDelay is how long a trigger must hold, tick after tick, before
	// a switch starts. Default 10s.
	SwitchDelay time.Duration `yaml:"switch_delay" json:"switch_delay"`
	// BakeTime is how long each step of a switch runs before the two
	// shares are compared. Default 10s.
	BakeTime time.Duration `yaml:"bake_time" json:"bake_time"`
	// Steps are the shares of the class routed to the new mode, in order.
	// Default 0.2, 0.5, 0.8, 1.
	Steps []float64 `yaml:"steps" json:"steps"`
	// RollbackMargin is how much worse (p99, error rate, cost per request)
	// the new share may be than the old one before the switch rolls back.
	// Default 0.10.
	RollbackMargin float64 `yaml:"rollback_margin" json:"rollback_margin"`
	// TradeCostMargin replaces RollbackMargin for the cost of a switch the
	// latency model predicts to cost more per request (to realtime at low
	// load: latency bought with busy time, announced by a negative
	// expected saving): the new share rolls back only when it costs this
	// much more than expected. Default 0.5.
	TradeCostMargin float64 `yaml:"trade_cost_margin" json:"trade_cost_margin"`
	// RollbackHold is how long, after a rollback, the same switch is not
	// tried again automatically. Default 60s.
	RollbackHold time.Duration `yaml:"rollback_hold" json:"rollback_hold"`
	// MinSamples is the fewest requests a share must have served before it
	// is judged. Default 20.
	MinSamples int `yaml:"min_samples" json:"min_samples"`
	// CostTrigger, if > 0, switches a class whose current mode costs more
	// per request than the other mode is predicted to (from the latency
	// model) by at least this fraction, when the other mode's predicted
	// p99 meets the SLO. 0 disables the cost trigger.
	CostTrigger float64 `yaml:"cost_trigger" json:"cost_trigger"`
	// Tick is how often the controller evaluates. Default 1s.
	Tick time.Duration
}

func (c *Config) defaults() {
	if c.SwitchDelay <= 0 {
		c.SwitchDelay = 10 * time.Second
	}
	if c.BakeTime <= 0 {
		c.BakeTime = 10 * time.Second
	}
	if len(c.Steps) == 0 {
		c.Steps = []float64{0.2, 0.5, 0.8, 1}
	}
	if c.RollbackMargin <= 0 {
		c.RollbackMargin = 0.10
	}
	if c.RollbackHold <= 0 {
		c.RollbackHold = 60 * time.Second
	}
	if c.TradeCostMargin <= 0 {
		c.TradeCostMargin = 0.5
	}
	if c.MinSamples <= 0 {
		c.MinSamples = 20
	}
	if c.Tick <= 0 {
		c.Tick = time.Second
	}
}

// Validate checks c.
func (c Config) Validate() error {
	switch {
	case c.SLO <= 0:
		return fmt.Errorf("slo must be > 0")
	case c.LowRPS < 0 || c.HighRPS < 0:
		return fmt.Errorf("low_rps and high_rps must be >= 0")
	case c.HighRPS > 0 && c.LowRPS >= c.HighRPS:
		return fmt.Errorf("low_rps (%g) must be below high_rps (%g)", c.LowRPS, c.HighRPS)
	case c.SwitchDelay < 0 || c.BakeTime < 0 || c.RollbackHold < 0 || c.Tick < 0:
		return fmt.Errorf("durations must be >= 0")
	case c.RollbackMargin < 0 || c.TradeCostMargin < 0 || c.CostTrigger < 0 || c.CostTrigger >= 1:
		return fmt.Errorf("rollback_margin and trade_cost_margin must be >= 0 and cost_trigger in [0, 1)")
	}
	for i, s := range c.Steps {
		if s <= 0 || s > 1 || (i > 0 && s <= c.Steps[i-1]) {
			return fmt.Errorf("steps must increase within (0, 1], got %v", c.Steps)
		}
	}
	if len(c.Steps) > 0 && c.Steps[len(c.Steps)-1] != 1 {
		return fmt.Errorf("the last step must be 1, got %v", c.Steps)
	}
	return nil
}

// Switcher routes the requests of one model and controls the modes of the
// configured classes.
type Switcher struct {
	model  string
	t      Target
	rec    Recorder
	clock  clock.Clock
	log    *slog.Logger
	price  float64 // USD per instance-hour
	share  *prometheus.GaugeVec
	ctl    [infergate.NumClasses]*classCtl
	tickMu sync.Mutex // one Tick at a time
}

// New returns a switcher for model over t, controlling the classes in
// cfgs. price is the instance price per hour, for cost figures. reg (may be
// nil) gets infergate_mode_share.
func New(model string, t Target, cfgs map[infergate.Class]Config, rec Recorder, clk clock.Clock, price float64, reg prometheus.Registerer, log *slog.Logger) (*Switcher, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Switcher{model: model, t: t, rec: rec, clock: clk, log: log, price: price,
		share: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "infergate_mode_share", Help: "Share of a class's requests routed to each serving mode.",
			ConstLabels: prometheus.Labels{"model": model},
		}, []string{"class", "mode"})}
	if reg != nil {
		if err := reg.Register(s.share); err != nil {
			return nil, err
		}
	}
	for c, cfg := range cfgs {
		if c >= infergate.NumClasses || c == infergate.ClassBulk {
			return nil, fmt.Errorf("class %s: only urgent and normal traffic switches modes", c)
		}
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("class %s: %w", c, err)
		}
		cfg.defaults()
		mode := t.Policy(c).Mode
		cc := &classCtl{cfg: cfg, class: c, mode: mode}
		cc.route.Store(newRoute(c, c, 0, 0))
		s.ctl[c] = cc
		s.setShare(cc, mode, mode, 0)
	}
	return s, nil
}

// Submit runs a request of class c through the mode its class is routed to
// now; see batching.Scheduler.Submit.
func (s *Switcher) Submit(ctx context.Context, c infergate.Class, inputs []infergate.Tensor, items int, timeout time.Duration) (*batching.Response, error) {
	if c >= infergate.NumClasses || s.ctl[c] == nil {
		return s.t.SubmitLane(ctx, c, c, inputs, items, timeout)
	}
	cc := s.ctl[c]
	cc.arrivals.Add(1)
	r := cc.route.Load()
	arm := 0
	if r.share > 0 {
		// Spread the new share evenly over arrivals (a low-discrepancy
		// sequence), so that each step's split holds over any short span.
		n := cc.seq.Add(1)
		if frac(float64(n)*goldenRatio) < r.share {
			arm = 1
		}
	}
	resp, err := s.t.SubmitLane(ctx, c, r.lanes[arm], inputs, items, timeout)
	r.stats[arm].record(resp, max(items, 1), err)
	return resp, err
}

const goldenRatio = 0.6180339887498949

func frac(x float64) float64 { return x - math.Floor(x) }

// route is how a class's requests are split between two lanes; a new step
// installs a new route, with fresh figures.
type route struct {
	lanes [2]infergate.Class // [0] old mode, [1] new mode
	share float64            // of requests to lanes[1]
	step  int
	stats [2]*armStats
	since time.Time
}

func newRoute(from, to infergate.Class, share float64, step int) *route {
	return &route{lanes: [2]infergate.Class{from, to}, share: share, step: step, stats: [2]*armStats{{}, {}}}
}

// armStats are the figures of one share of a class during one step.
type armStats struct {
	mu      sync.Mutex
	n       int
	errors  int
	busy    float64 // seconds of batch execution attributed to the requests
	latency []float64
}

// maxLatencySamples bounds the latencies kept per share and step.
const maxLatencySamples = 200_000

// record adds one request's outcome: its time in the scheduler (queue and
// batch execution, as the scheduler measured it) and its share of the
// batch's execution time.
func (a *armStats) record(resp *batching.Response, items int, err error) {
	if err != nil && !countsAsError(err) {
		return // the client's doing (canceled, invalid input)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	if err != nil {
		a.errors++
		return
	}
	if resp == nil {
		return
	}
	if len(a.latency) < maxLatencySamples {
		a.latency = append(a.latency, (resp.Queued + resp.Compute).Seconds())
	}
	if resp.BatchSize > 0 {
		a.busy += resp.Compute.Seconds() * float64(items) / float64(resp.BatchSize)
	}
}

// countsAsError reports whether a failed request counts against the mode
// that served it: overload, expiry, runtime failure.
func countsAsError(err error) bool {
	switch infergate.ErrorCode(err) {
	case infergate.EOverloaded, infergate.EDeadline, infergate.EInternal, infergate.EUnavailable:
		return true
	}
	return false
}

// Figures summarize one share's requests.
type Figures struct {
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	// CostPer1K is the measured busy time of the served requests priced
	// at the instance price, per 1,000 requests (USD).
	CostPer1K float64 `json:"cost_per_1k"`
}

func (a *armStats) figures(pricePerHour float64) Figures {
	a.mu.Lock()
	lat := slices.Clone(a.latency)
	f := Figures{Requests: a.n, Errors: a.errors}
	busy := a.busy
	a.mu.Unlock()
	if f.Requests > 0 {
		f.ErrorRate = float64(f.Errors) / float64(f.Requests)
	}
	if ok := f.Requests - f.Errors; ok > 0 {
		f.CostPer1K = busy * pricePerHour / 3600 / float64(ok) * 1000
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		f.P50MS = nearestRank(lat, 0.50) * 1e3
		f.P99MS = nearestRank(lat, 0.99) * 1e3
	}
	return f
}

func nearestRank(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

type phase int

const (
	stable phase = iota
	shifting
)

// classCtl is one class's controller state. Its fields other than route,
// arrivals and seq are guarded by Switcher.tickMu... and mu, for readers.
type classCtl struct {
	cfg   Config
	class infergate.Class

	route    atomic.Pointer[route]
	arrivals atomic.Int64
	seq      atomic.Uint64

	mu     sync.Mutex
	mode   infergate.Mode // the mode served (the old one while shifting)
	pinned bool
	phase  phase
	to     infergate.Mode // while shifting
	// trigger, its figures and when it started holding.
	want      infergate.Mode
	wantWhy   string
	wantSince time.Time
	// the switch in progress
	reason   string
	forced   bool
	restore  *batching.Policy // the target lane's policy before a forced setting
	restoreL infergate.Class
	// oldRate is the rate the old share was serving when oldFig was
	// measured.
	oldRate float64
	oldFig  Figures // last figures of the old share with enough samples
	// holdUntil blocks an automatic switch to holdMode after a rollback.
	holdUntil time.Time
	holdMode  infergate.Mode
	lastTick  time.Time
	rate      float64
	low, high float64
	last      Figures // the current mode's figures over the last tick
}

// laneFor returns the lane that serves class c in mode m: the class's own
// lane when its policy is in m, else the first lane in m.
func (s *Switcher) laneFor(c infergate.Class, m infergate.Mode) (infergate.Class, bool) {
	if s.t.Policy(c).Mode == m {
		return c, true
	}
	for _, l := range infergate.Classes {
		if s.t.Policy(l).Mode == m {
			return l, true
		}
	}
	return 0, false
}

func (s *Switcher) setShare(cc *classCtl, from, to infergate.Mode, share float64) {
	for _, m := range []infergate.Mode{infergate.ModeRealtime, infergate.ModeHybrid, infergate.ModeBatch} {
		v := 0.0
		if m == from {
			v += 1 - share
		}
		if m == to {
			v += share
		}
		s.share.WithLabelValues(cc.class.String(), string(m)).Set(v)
	}
}

// Run evaluates every class's triggers each tick until ctx ends.
func (s *Switcher) Run(ctx context.Context) {
	tick := time.Second
	for _, cc := range s.ctl {
		if cc != nil {
			tick = min(tick, cc.cfg.Tick)
		}
	}
	for {
		t := s.clock.NewTimer(tick)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		s.Tick()
	}
}

// Tick evaluates every controlled class once.
func (s *Switcher) Tick() {
	s.tickMu.Lock()
	defer s.tickMu.Unlock()
	now := s.clock.Now()
	for _, cc := range s.ctl {
		if cc != nil {
			s.tick(cc, now)
		}
	}
}

func (s *Switcher) tick(cc *classCtl, now time.Time) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	n := cc.arrivals.Swap(0)
	if !cc.lastTick.IsZero() {
		if dt := now.Sub(cc.lastTick).Seconds(); dt > 0 {
			cc.rate = float64(n) / dt
		}
	}
	cc.lastTick = now
	cc.low, cc.high = s.thresholds(cc)
	if cc.phase == shifting {
		s.stepLocked(cc, now)
		return
	}
	// Stable: take this tick's figures and start afresh.
	r := cc.route.Load()
	cc.last = r.stats[0].figures(s.price)
	cc.route.Store(newRoute(r.lanes[0], r.lanes[0], 0, 0))
	if cc.last.Requests >= cc.cfg.MinSamples {
		cc.oldFig = cc.last
	}
	if cc.pinned {
		cc.want = ""
		return
	}
	want, why := s.desiredLocked(cc)
	if want == "" || (want == cc.holdMode && now.Before(cc.holdUntil)) {
		cc.want, cc.wantWhy = "", ""
		return
	}
	if want != cc.want || why != cc.wantWhy {
		cc.want, cc.wantWhy, cc.wantSince = want, why, now
	}
	if now.Sub(cc.wantSince) >= cc.cfg.SwitchDelay {
		s.startLocked(cc, now, want, why, false)
	}
}

// thresholds returns the load trigger's thresholds: configured, or derived
// from the live latency model.
func (s *Switcher) thresholds(cc *classCtl) (low, high float64) {
	if cc.cfg.HighRPS > 0 {
		return cc.cfg.LowRPS, cc.cfg.HighRPS
	}
	capRT := s.realtimeCapacity()
	if capRT <= 0 {
		return 0, 0
	}
	return capRT / 5, capRT / 2
}

// realtimeCapacity is the requests per second the instances serve one at a
// time, from the measured batch-of-one latency and per-request overhead; 0
// before they are measured.
func (s *Switcher) realtimeCapacity() float64 {
	lat := s.t.Latency()
	est, ok := lat.Estimate(1)
	if !ok {
		return 0
	}
	per := est.Seconds() + lat.Overhead().MeanMS/1e3
	if per <= 0 {
		return 0
	}
	return float64(s.t.Instances()) / per
}

// desiredLocked applies the triggers to the current mode and figures: the
// mode the class should move to and why ("" when it should stay).
func (s *Switcher) desiredLocked(cc *classCtl) (infergate.Mode, string) {
	slo := cc.cfg.SLO.Seconds() * 1e3
	breach := cc.last.Requests >= cc.cfg.MinSamples && (cc.last.P99MS > slo || cc.last.ErrorRate > 0.01)
	switch cc.mode {
	case infergate.ModeRealtime:
		if _, ok := s.laneFor(cc.class, infergate.ModeHybrid); !ok {
			return "", ""
		}
		switch {
		case cc.high > 0 && cc.rate >= cc.high:
			return infergate.ModeHybrid, "load_high"
		case breach:
			return infergate.ModeHybrid, "latency"
		case cc.cfg.CostTrigger > 0 && cc.last.Requests >= cc.cfg.MinSamples:
			pred, ok := s.predict(cc, infergate.ModeHybrid)
			if ok && pred.P99MS <= slo && cc.last.CostPer1K > 0 && 1-pred.CostPer1K/cc.last.CostPer1K >= cc.cfg.CostTrigger {
				return infergate.ModeHybrid, "cost"
			}
		}
	case infergate.ModeHybrid:
		if _, ok := s.laneFor(cc.class, infergate.ModeRealtime); !ok {
			return "", ""
		}
		switch {
		case cc.high > 0 && cc.rate <= cc.low:
			return infergate.ModeRealtime, "load_low"
		case breach && (cc.high == 0 || cc.rate < cc.high):
			// Below the high threshold, realtime serves the class
			// without the batch wait.
			return infergate.ModeRealtime, "latency"
		}
	}
	return "", ""
}

// Prediction is what the latency model says a mode would give the class at
// its current rate.
type Prediction struct {
	BatchSize float64 `json:"batch_size"`
	P99MS     float64 `json:"p99_ms"`
	CostPer1K float64 `json:"cost_per_1k"`
}

// predict estimates mode m for the class at its measured rate: the mean
// batch a lane's policy forms (one request plus the arrivals during its
// queue delay, up to its maximum), that batch's measured latency, and the
// request's share of it priced.
func (s *Switcher) predict(cc *classCtl, m infergate.Mode) (Prediction, bool) {
	return s.predictAt(cc, m, cc.rate)
}

// predictAt is predict at rate requests per second (a share's).
func (s *Switcher) predictAt(cc *classCtl, m infergate.Mode, rate float64) (Prediction, bool) {
	lane, ok := s.laneFor(cc.class, m)
	if !ok {
		return Prediction{}, false
	}
	p := s.t.Policy(lane)
	wait := p.MaxQueueDelay
	if p.Kind == batching.Time {
		wait = p.BatchTimeout
	}
	if p.Kind == batching.Single {
		wait = 0
	}
	b := min(1+max(rate, 0)*wait.Seconds(), float64(max(p.MaxBatchSize, 1)))
	// The mean batch is fractional: interpolate the measured latencies of
	// the sizes either side.
	lo := int(math.Floor(b))
	est, ok := s.t.Latency().Estimate(lo)
	if !ok {
		return Prediction{}, false
	}
	if f := b - float64(lo); f > 0 {
		hi, _ := s.t.Latency().Estimate(lo + 1)
		est += time.Duration(f * float64(hi-est))
	}
	return Prediction{BatchSize: b, P99MS: (wait + est).Seconds() * 1e3,
		CostPer1K: est.Seconds() / b * s.price / 3600 * 1000}, true
}

// startLocked begins a switch of cc to mode to.
func (s *Switcher) startLocked(cc *classCtl, now time.Time, to infergate.Mode, trigger string, forced bool) {
	from := cc.mode
	fromLane, _ := s.laneFor(cc.class, from)
	toLane, _ := s.laneFor(cc.class, to)
	cc.restore = nil
	predFrom, okF := s.predict(cc, from)
	predTo, okT := s.predict(cc, to)
	fig := map[string]float64{"rate_rps": cc.rate, "low_rps": cc.low, "high_rps": cc.high,
		"slo_ms": cc.cfg.SLO.Seconds() * 1e3, "p99_ms": cc.last.P99MS, "error_rate": cc.last.ErrorRate,
		"cost_per_1k": cc.last.CostPer1K}
	cc.oldRate = cc.rate
	if okF && okT && predFrom.CostPer1K > 0 {
		fig["predicted_cost_per_1k_from"] = predFrom.CostPer1K
		fig["predicted_cost_per_1k_to"] = predTo.CostPer1K
		fig["predicted_p99_ms_to"] = predTo.P99MS
		fig["expected_saving"] = 1 - predTo.CostPer1K/predFrom.CostPer1K
	}
	cc.phase, cc.to, cc.reason, cc.forced = shifting, to, trigger, forced
	cc.want = ""
	r := newRoute(fromLane, toLane, cc.cfg.Steps[0], 0)
	r.since = now
	cc.route.Store(r)
	s.setShare(cc, from, to, r.share)
	s.emit(cc, infergate.Event{Kind: "switch_start", Trigger: trigger, From: string(from), To: string(to), Figures: fig, Outcome: "started",
		Message: fmt.Sprintf("%s traffic of %s moves from %s to %s (%s): %.0f%% to %s first", cc.class, s.model, from, to, trigger, 100*r.share, to)})
}

// stepLocked judges the running step once it has baked and either moves to
// the next share, completes the switch, or rolls it back.
func (s *Switcher) stepLocked(cc *classCtl, now time.Time) {
	r := cc.route.Load()
	if now.Sub(r.since) < cc.cfg.BakeTime {
		return
	}
	oldF, newF := r.stats[0].figures(s.price), r.stats[1].figures(s.price)
	if oldF.Requests >= cc.cfg.MinSamples {
		cc.oldFig, cc.oldRate = oldF, (1-r.share)*cc.rate
	}
	// The cost the new share was expected to have: the old share's
	// measured cost times the ratio the latency model predicts between
	// the two at their shares of the traffic.
	expected := 0.0
	if pn, ok := s.predictAt(cc, cc.to, r.share*cc.rate); ok {
		if po, ok := s.predictAt(cc, cc.mode, cc.oldRate); ok && po.CostPer1K > 0 {
			expected = cc.oldFig.CostPer1K * pn.CostPer1K / po.CostPer1K
		}
	}
	if newF.Requests < cc.cfg.MinSamples && now.Sub(r.since) < 3*cc.cfg.BakeTime {
		return // not enough traffic yet to judge: bake longer
	}
	fig := map[string]float64{"share": r.share, "rate_rps": cc.rate,
		"old_p99_ms": cc.oldFig.P99MS, "new_p99_ms": newF.P99MS, "old_error_rate": cc.oldFig.ErrorRate, "new_error_rate": newF.ErrorRate,
		"old_cost_per_1k": cc.oldFig.CostPer1K, "new_cost_per_1k": newF.CostPer1K, "old_requests": float64(oldF.Requests),
		"new_requests": float64(newF.Requests), "slo_ms": cc.cfg.SLO.Seconds() * 1e3}
	fig["expected_cost_per_1k"] = expected
	if why := s.regression(cc, cc.oldFig, newF, expected); why != "" && newF.Requests >= cc.cfg.MinSamples {
		s.rollbackLocked(cc, now, why, fig)
		return
	}
	if r.step+1 >= len(cc.cfg.Steps) {
		from := cc.mode
		cc.mode, cc.phase = cc.to, stable
		toLane := r.lanes[1]
		cc.route.Store(newRoute(toLane, toLane, 0, 0))
		s.setShare(cc, cc.to, cc.to, 0)
		cc.oldFig = newF
		s.emit(cc, infergate.Event{Kind: "switch_done", Trigger: cc.reason, From: string(from), To: string(cc.to), Figures: fig, Outcome: "completed",
			Message: fmt.Sprintf("%s traffic of %s is served in %s: no regression at any step", cc.class, s.model, cc.to)})
		return
	}
	next := newRoute(r.lanes[0], r.lanes[1], cc.cfg.Steps[r.step+1], r.step+1)
	next.since = now
	cc.route.Store(next)
	s.setShare(cc, cc.mode, cc.to, next.share)
	s.emit(cc, infergate.Event{Kind: "switch_step", Trigger: cc.reason, From: string(cc.mode), To: string(cc.to), Figures: fig, Outcome: "stepped",
		Message: fmt.Sprintf("%s traffic of %s: %.0f%% to %s after a step without regression", cc.class, s.model, 100*next.share, cc.to)})
}

// regression compares the new share's figures with the old share's: "" if
// the new one is not worse by more than the margin. The p99 counts only
// above the SLO (a hybrid share may wait longer than a realtime one and
// still meet it). expected is the cost the new share was expected to have:
// the old share's measured cost times the cost ratio the latency model
// predicts for the two shares (0: none). When it is above the old share's
// cost, the switch trades cost for latency by design (to realtime at low
// load, announced before it starts), and only a cost TradeCostMargin above
// the expected one counts: the model's prediction of a share it has not
// yet measured under this load is good to 10-20%, not to the 10% margin.
func (s *Switcher) regression(cc *classCtl, old, cur Figures, expected float64) string {
	m := 1 + cc.cfg.RollbackMargin
	slo := cc.cfg.SLO.Seconds() * 1e3
	switch {
	case cur.P99MS > slo && cur.P99MS > m*old.P99MS:
		return fmt.Sprintf("p99 %.1f ms over the SLO %.0f ms and more than %.0f%% above the old share's %.1f ms", cur.P99MS, slo, 100*(m-1), old.P99MS)
	case cur.Errors > 2 && cur.ErrorRate > m*old.ErrorRate+0.001:
		return fmt.Sprintf("error rate %.2f%% against the old share's %.2f%%", 100*cur.ErrorRate, 100*old.ErrorRate)
	case expected > old.CostPer1K && old.CostPer1K > 0:
		if cur.CostPer1K > (1+cc.cfg.TradeCostMargin)*expected {
			return fmt.Sprintf("cost per 1k %.6f USD, more than %.0f%% over the %.6f expected (the old share's %.6f)",
				cur.CostPer1K, 100*cc.cfg.TradeCostMargin, expected, old.CostPer1K)
		}
	case old.CostPer1K > 0 && cur.CostPer1K > m*old.CostPer1K:
		return fmt.Sprintf("cost per 1k %.6f USD against the old share's %.6f (%.6f expected)", cur.CostPer1K, old.CostPer1K, expected)
	}
	return ""
}

func (s *Switcher) rollbackLocked(cc *classCtl, now time.Time, why string, fig map[string]float64) {
	r := cc.route.Load()
	cc.route.Store(newRoute(r.lanes[0], r.lanes[0], 0, 0))
	if cc.restore != nil {
		if err := s.t.SetPolicy(cc.restoreL, *cc.restore); err != nil {
			s.log.Error("restoring a lane's policy after a rollback", "model", s.model, "lane", cc.restoreL, "err", err)
		}
		cc.restore = nil
	}
	to := cc.to
	cc.phase = stable
	cc.holdMode, cc.holdUntil = to, now.Add(cc.cfg.RollbackHold)
	s.setShare(cc, cc.mode, cc.mode, 0)
	s.emit(cc, infergate.Event{Kind: "rollback", Trigger: cc.reason, From: string(to), To: string(cc.mode), Figures: fig, Outcome: "rolled_back",
		Message: fmt.Sprintf("%s traffic of %s back to %s at %.0f%% to %s: %s", cc.class, s.model, cc.mode, 100*r.share, to, why)})
}

func (s *Switcher) emit(cc *classCtl, e infergate.Event) {
	e.Model, e.Class = s.model, cc.class.String()
	if s.rec != nil {
		s.rec.Add(e)
	}
}

// State is a class's mode state, for the admin API.
type State struct {
	Class   string         `json:"class"`
	Mode    infergate.Mode `json:"mode"`
	Pinned  bool           `json:"pinned"`
	Phase   string         `json:"phase"` // stable or shifting
	To      infergate.Mode `json:"to,omitempty"`
	Share   float64        `json:"share,omitempty"` // of requests to To
	Trigger string         `json:"trigger,omitempty"`
	RateRPS float64        `json:"rate_rps"`
	LowRPS  float64        `json:"low_rps"`
	HighRPS float64        `json:"high_rps"`
	SLOMS   float64        `json:"slo_ms"`
	Last    Figures        `json:"last"`
	// Predicted are the latency model's predictions per mode at the rate.
	Predicted map[infergate.Mode]Prediction `json:"predicted,omitempty"`
}

// States returns the state of every controlled class.
func (s *Switcher) States() []State {
	var out []State
	for _, cc := range s.ctl {
		if cc == nil {
			continue
		}
		cc.mu.Lock()
		st := State{Class: cc.class.String(), Mode: cc.mode, Pinned: cc.pinned, Phase: "stable", RateRPS: cc.rate,
			LowRPS: cc.low, HighRPS: cc.high, SLOMS: cc.cfg.SLO.Seconds() * 1e3, Last: cc.last, Predicted: map[infergate.Mode]Prediction{}}
		if cc.phase == shifting {
			st.Phase, st.To, st.Share, st.Trigger = "shifting", cc.to, cc.route.Load().share, cc.reason
		}
		for _, m := range []infergate.Mode{infergate.ModeRealtime, infergate.ModeHybrid} {
			if p, ok := s.predict(cc, m); ok {
				st.Predicted[m] = p
			}
		}
		cc.mu.Unlock()
		out = append(out, st)
	}
	return out
}

func (s *Switcher) class(c infergate.Class) (*classCtl, error) {
	if c >= infergate.NumClasses || s.ctl[c] == nil {
		return nil, infergate.Errorf(infergate.ENotFound, "class %s of model %s has no mode switching configured", c, s.model)
	}
	return s.ctl[c], nil
}

// Pin serves class c in mode m from now on, at once and wholly, with no
// automatic switching until Unpin. A switch in progress is abandoned.
func (s *Switcher) Pin(c infergate.Class, m infergate.Mode) error {
	cc, err := s.class(c)
	if err != nil {
		return err
	}
	lane, ok := s.laneFor(c, m)
	if !ok {
		return infergate.Errorf(infergate.EInvalid, "no lane of model %s serves mode %q", s.model, m)
	}
	s.tickMu.Lock()
	defer s.tickMu.Unlock()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	from := cc.mode
	if cc.phase == shifting && cc.restore != nil && cc.to != m {
		_ = s.t.SetPolicy(cc.restoreL, *cc.restore)
	}
	cc.restore = nil
	cc.mode, cc.pinned, cc.phase, cc.want = m, true, stable, ""
	cc.route.Store(newRoute(lane, lane, 0, 0))
	s.setShare(cc, m, m, 0)
	s.emit(cc, infergate.Event{Kind: "pin", Trigger: "operator", From: string(from), To: string(m), Outcome: "applied",
		Message: fmt.Sprintf("%s traffic of %s pinned to %s by the operator", c, s.model, m)})
	return nil
}

// Unpin returns class c to automatic switching.
func (s *Switcher) Unpin(c infergate.Class) error {
	cc, err := s.class(c)
	if err != nil {
		return err
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.pinned = false
	s.emit(cc, infergate.Event{Kind: "unpin", Trigger: "operator", From: string(cc.mode), Outcome: "applied",
		Message: fmt.Sprintf("%s traffic of %s back under automatic switching", c, s.model)})
	return nil
}

// Force starts a switch of class c to mode m now, skipping the triggers and
// the switch delay but not the gradual shift and the rollback. pol, if not
// nil, is a setting to try: its non-zero fields (policy, max_batch_size,
// max_queue_delay, batch_timeout, target_latency) override the policy of
// the lane that serves m, which is restored if the switch rolls back.
func (s *Switcher) Force(c infergate.Class, m infergate.Mode, pol *batching.Policy) error {
	cc, err := s.class(c)
	if err != nil {
		return err
	}
	lane, ok := s.laneFor(c, m)
	if !ok {
		return infergate.Errorf(infergate.EInvalid, "no lane of model %s serves mode %q", s.model, m)
	}
	s.tickMu.Lock()
	defer s.tickMu.Unlock()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	switch {
	case cc.phase == shifting:
		return infergate.Errorf(infergate.EConflict, "%s traffic of %s is already switching to %s", c, s.model, cc.to)
	case cc.mode == m:
		return infergate.Errorf(infergate.EConflict, "%s traffic of %s is already served in %s", c, s.model, m)
	}
	if pol != nil {
		if pol.Mode == "" {
			pol.Mode = m
		}
		if pol.Mode != m {
			return infergate.Errorf(infergate.EInvalid, "the policy's mode %q is not the target mode %q", pol.Mode, m)
		}
		old := s.t.Policy(lane)
		if err := s.t.SetPolicy(lane, overlay(old, *pol)); err != nil {
			return err
		}
		s.startLocked(cc, s.clock.Now(), m, "operator", true)
		cc.restore, cc.restoreL = &old, lane
	} else {
		s.startLocked(cc, s.clock.Now(), m, "operator", true)
	}
	cc.pinned = false
	return nil
}

// overlay returns base with o's non-zero setting fields.
func overlay(base, o batching.Policy) batching.Policy {
	if o.Kind != "" {
		base.Kind = o.Kind
	}
	if o.MaxBatchSize > 0 {
		base.MaxBatchSize = o.MaxBatchSize
	}
	if o.MaxQueueDelay > 0 {
		base.MaxQueueDelay = o.MaxQueueDelay
	}
	if o.BatchTimeout > 0 {
		base.BatchTimeout = o.BatchTimeout
	}
	if o.TargetLatency > 0 {
		base.TargetLatency = o.TargetLatency
	}
	return base
}
