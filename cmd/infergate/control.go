package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/autoscale"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/dashboard"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/events"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/jobs/runner"
	"github.com/infergate/infergate/internal/switcher"
)

// control holds the live controllers (mode switchers, autoscalers), their
// event log and the dashboard, and runs their loops until Close.
type control struct {
	events    *events.Log
	switchers map[string]*switcher.Switcher
	scalers   map[string]*autoscale.Scaler
	dash      *dashboard.Dashboard
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// backlogSource reports the batch jobs' remaining work per model (the batch
// runner).
type backlogSource interface {
	Backlogs(model string) []runner.Backlog
}

// startControl builds the controllers the models' configurations ask for
// and the dashboard, and starts their loops.
func startControl(cfg config.Config, models []config.Model, eng *engine.Engine, backlog backlogSource, reg *prometheus.Registry, clk clock.Clock, log *slog.Logger) (*control, error) {
	c := &control{events: events.New(clk, log, reg, 0), switchers: map[string]*switcher.Switcher{}, scalers: map[string]*autoscale.Scaler{}}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	fail := func(err error) (*control, error) {
		cancel()
		c.wg.Wait()
		return nil, err
	}
	slos := map[string]map[string]time.Duration{}
	for _, mc := range models {
		m, err := eng.Model(mc.Name)
		if err != nil {
			return fail(err)
		}
		slos[mc.Name] = map[string]time.Duration{}
		if sc := mc.SwitchingConfigs(); len(sc) > 0 {
			sw, err := switcher.New(mc.Name, m.Sched, sc, c.events, clk, cfg.PricePerInstanceHour, reg, log.With("model", mc.Name))
			if err != nil {
				return fail(fmt.Errorf("model %s: switching: %w", mc.Name, err))
			}
			m.SetRouter(sw)
			c.switchers[mc.Name] = sw
			for cl, s := range sc {
				slos[mc.Name][cl.String()] = s.SLO
			}
			c.goRun(func() { sw.Run(ctx) })
		}
		if mc.Autoscale != nil {
			acfg := *mc.Autoscale
			acfg.InstancePricePerHour = cfg.PricePerInstanceHour
			sc, err := autoscale.NewScaler(mc.Name, acfg, eng, scaleSource{eng, backlog}, c.events, clk, reg, log.With("model", mc.Name))
			if err != nil {
				return fail(fmt.Errorf("model %s: autoscale: %w", mc.Name, err))
			}
			c.scalers[mc.Name] = sc
			for _, cl := range []string{"urgent", "normal"} {
				if _, set := slos[mc.Name][cl]; !set && acfg.SLO > 0 {
					slos[mc.Name][cl] = acfg.SLO
				}
			}
			c.goRun(func() { sc.Run(ctx, time.Second) })
		}
	}
	c.dash = dashboard.New(dashboard.Options{Gatherer: reg, Events: c.events, Clock: clk, PricePerInstanceHour: cfg.PricePerInstanceHour,
		SLO: func(model, class string) time.Duration { return slos[model][class] }, Logger: log})
	c.goRun(func() { c.dash.Run(ctx) })
	return c, nil
}

func (c *control) goRun(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// modes returns a model's switcher for the HTTP API.
func (c *control) modes(model string) httpapi.ModeController {
	if sw, ok := c.switchers[model]; ok {
		return sw
	}
	return nil
}

// dashboard is the page at / and its data.
func (c *control) dashboard() http.Handler { return c.dash.Handler() }

// Close stops the loops; routes and instance counts stay as they are.
func (c *control) Close() {
	c.cancel()
	c.wg.Wait()
}

// scaleSource samples a model for its autoscaler: the regular instances'
// busy time, the real-time requests' recent p99 and oldest queue wait, and
// the batch jobs' remaining work with the bulk rate one instance gives
// (the measured latency of a full bulk batch).
type scaleSource struct {
	eng     *engine.Engine
	backlog backlogSource
}

// minP99Samples is the fewest requests a p99 is reported for.
const minP99Samples = 20

func (s scaleSource) Sample(model string) (autoscale.Sample, error) {
	m, err := s.eng.Model(model)
	if err != nil {
		return autoscale.Sample{}, err
	}
	out := autoscale.Sample{BusySeconds: m.Sched.BusySeconds(), QueueDelay: m.Sched.OldestWait()}
	if p99, n := m.RecentP99(); n >= minP99Samples {
		out.P99 = p99
	}
	if s.backlog == nil {
		return out, nil
	}
	rate := 0.0
	b := m.Sched.Policy(infergate.ClassBulk).MaxBatchSize
	if est, ok := m.Sched.Latency().Estimate(b); ok && est > 0 {
		rate = float64(b) / est.Seconds()
	}
	for _, bl := range s.backlog.Backlogs(model) {
		out.Backlog = append(out.Backlog, autoscale.Backlog{ItemsLeft: bl.ItemsLeft, Deadline: bl.Deadline, ItemsPerSecPerInstance: rate})
	}
	return out, nil
}
