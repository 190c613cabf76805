package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/events"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/switcher"
)

// control holds the live controllers (mode switchers) and their event log,
// and runs their loops until Close.
type control struct {
	events    *events.Log
	switchers map[string]*switcher.Switcher
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// startControl builds the controllers the models' configurations ask for
// and starts their loops.
func startControl(cfg config.Config, models []config.Model, eng *engine.Engine, reg prometheus.Registerer, clk clock.Clock, log *slog.Logger) (*control, error) {
	c := &control{events: events.New(clk, log, reg, 0), switchers: map[string]*switcher.Switcher{}}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	for _, mc := range models {
		sc := mc.SwitchingConfigs()
		if len(sc) == 0 {
			continue
		}
		m, err := eng.Model(mc.Name)
		if err != nil {
			cancel()
			return nil, err
		}
		sw, err := switcher.New(mc.Name, m.Sched, sc, c.events, clk, cfg.PricePerInstanceHour, reg, log.With("model", mc.Name))
		if err != nil {
			cancel()
			return nil, fmt.Errorf("model %s: switching: %w", mc.Name, err)
		}
		m.SetRouter(sw)
		c.switchers[mc.Name] = sw
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			sw.Run(ctx)
		}()
	}
	return c, nil
}

// modes returns a model's switcher for the HTTP API.
func (c *control) modes(model string) httpapi.ModeController {
	if sw, ok := c.switchers[model]; ok {
		return sw
	}
	return nil
}

// Close stops the loops; routes stay as they are.
func (c *control) Close() {
	c.cancel()
	c.wg.Wait()
}
