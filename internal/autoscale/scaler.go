package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
)

// Target changes the instance count of a model. The engine implements it.
type Target interface {
	// Instances returns the model's current instance count.
	Instances(model string) int
	// SetInstances adds or retires instances (at batch boundaries) until
	// the model has n. An error means the count did not change as asked.
	SetInstances(ctx context.Context, model string, n int) error
}

// Source observes a model. The engine implements it.
type Source interface {
	// Sample returns the model's current figures. Time and Instances may be
	// left zero: [Scaler.Step] fills them from its clock and the [Target].
	Sample(model string) (Sample, error)
}

// Recorder keeps decisions; internal/events.Log implements it.
type Recorder interface {
	Add(e infergate.Event) infergate.Event
}

// Event kinds and outcomes the Scaler records.
const (
	KindScaleUp     = "scale_up"
	KindScaleDown   = "scale_down"
	OutcomeApplied  = "applied"
	OutcomeFailed   = "failed"
	DefaultTick     = time.Second
	minRetryBackoff = 5 * time.Second
	maxRetryBackoff = 2 * time.Minute
)

// Scaler runs a [Controller] for one model: every tick it samples the
// model, decides, applies a change through the [Target] and records it as
// an event. It is safe for concurrent use.
type Scaler struct {
	model  string
	ctl    *Controller
	target Target
	src    Source
	rec    Recorder
	clock  clock.Clock
	log    *slog.Logger

	desired     prometheus.Gauge
	utilization prometheus.Gauge
	busy        prometheus.Gauge

	mu      sync.Mutex // serialises Step; guards the fields below
	retryAt time.Time  // after a failed change, no new attempt before this
	backoff time.Duration
}

// NewScaler returns a scaler of model between cfg's bounds. It registers
// infergate_autoscale_desired_instances, infergate_autoscale_utilization
// and infergate_autoscale_busy_instances, labelled with the model, on reg
// (when not nil). rec, clk and log may be nil (no events, the wall clock,
// no logs).
func NewScaler(model string, cfg Config, t Target, src Source, rec Recorder, clk clock.Clock, reg prometheus.Registerer, log *slog.Logger) (*Scaler, error) {
	if t == nil || src == nil {
		return nil, errors.New("autoscale: Target and Source are required")
	}
	ctl, err := NewController(cfg)
	if err != nil {
		return nil, err
	}
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	labels := prometheus.Labels{"model": model}
	s := &Scaler{
		model: model, ctl: ctl, target: t, src: src, rec: rec, clock: clk,
		log: log.With("component", "autoscale", "model", model),
		desired: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "infergate_autoscale_desired_instances", ConstLabels: labels,
			Help: "Instances the autoscaler wants for the model (its last decision, within min and max).",
		}),
		utilization: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "infergate_autoscale_utilization", ConstLabels: labels,
			Help: "Smoothed busy share of the model's instance time (smoothed busy instances / instances).",
		}),
		busy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "infergate_autoscale_busy_instances", ConstLabels: labels,
			Help: "Smoothed busy instance-equivalents of the model (busy seconds per second); additive across pods.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.desired, s.utilization, s.busy} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("autoscale: register metrics of %s: %w", model, err)
			}
		}
	}
	return s, nil
}

// Controller returns the scaler's controller (for its Config).
func (s *Scaler) Controller() *Controller { return s.ctl }

// Run calls [Scaler.Step] every tick (DefaultTick when <= 0) until ctx is
// done. Errors are logged; they are also recorded as events by Step.
func (s *Scaler) Run(ctx context.Context, tick time.Duration) {
	if tick <= 0 {
		tick = DefaultTick
	}
	for {
		t := s.clock.NewTimer(tick)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		if _, err := s.Step(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("autoscale step failed", "err", err)
		}
	}
}

// Step does one tick: sample, decide, and on a change call SetInstances,
// then [Controller.Applied] and record an event with Outcome "applied"; or,
// if SetInstances fails, record Outcome "failed", leave the controller
// believing the old count (no cooldown starts) and return the error. After
// a failure further attempts back off (5s doubling to 2m) while the
// decisions go on. Sample.Time is filled from the clock when zero and
// Sample.Instances always from the Target.
func (s *Scaler) Step(ctx context.Context) (Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sample, err := s.src.Sample(s.model)
	if err != nil {
		return Decision{}, fmt.Errorf("autoscale: sample %s: %w", s.model, err)
	}
	now := s.clock.Now()
	if sample.Time.IsZero() {
		sample.Time = now
	}
	sample.Instances = s.target.Instances(s.model)

	d := s.ctl.Observe(sample)
	s.desired.Set(float64(d.Desired))
	if u, ok := d.Figures["utilization"]; ok {
		s.utilization.Set(u)
	}
	if b, ok := d.Figures["busy_instances"]; ok {
		s.busy.Set(b)
	}
	if !d.Change() {
		return d, nil
	}
	if now.Before(s.retryAt) {
		d.Figures["retry_in_s"] = s.retryAt.Sub(now).Seconds()
		return d, nil
	}

	kind := KindScaleUp
	if d.Desired < d.Current {
		kind = KindScaleDown
	}
	ev := infergate.Event{
		Time: now, Kind: kind, Model: s.model, Trigger: d.Trigger,
		From: strconv.Itoa(d.Current), To: strconv.Itoa(d.Desired),
		Figures: maps.Clone(d.Figures), Message: d.Reason,
	}
	if err := s.target.SetInstances(ctx, s.model, d.Desired); err != nil {
		if ctx.Err() != nil { // shutting down: not a failure of the scaler
			return d, err
		}
		s.backoff = min(max(2*s.backoff, minRetryBackoff), maxRetryBackoff)
		s.retryAt = now.Add(s.backoff)
		ev.Outcome = OutcomeFailed
		ev.Message = fmt.Sprintf("%s Failed: %v (next attempt in %s).", d.Reason, err, s.backoff)
		s.record(ev)
		return d, fmt.Errorf("autoscale: set %s instances %d -> %d: %w", s.model, d.Current, d.Desired, err)
	}
	s.backoff, s.retryAt = 0, time.Time{}
	s.ctl.Applied(d.Desired, now)
	ev.Outcome = OutcomeApplied
	s.record(ev)
	return d, nil
}

func (s *Scaler) record(ev infergate.Event) {
	if s.rec != nil {
		s.rec.Add(ev)
		return
	}
	s.log.Info("autoscale", "kind", ev.Kind, "trigger", ev.Trigger, "from", ev.From, "to", ev.To, "outcome", ev.Outcome, "msg", ev.Message)
}
