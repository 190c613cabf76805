// Package cost is the cost ledger. Every executed batch is recorded with its
// measured busy time; the ledger attributes that time to the requests in the
// batch and prices it at the configured instance price. Provisioned instance
// time that no batch used is idle cost.
//
// All figures are derived from measured durations and the configured price:
// the one-by-one baseline a saving is computed against is the measured
// batch-1 latency of the same model at the time of the batch.
package cost

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
)

// Share is the part of a batch that belongs to one class.
type Share struct {
	Class infergate.Class
	Mode  infergate.Mode
	// Requests and Items in the batch from this class. A request may carry
	// several items (a client-side batch).
	Requests int
	Items    int
}

type key struct {
	model string
	class infergate.Class
	mode  infergate.Mode
}

type line struct {
	requests, items, batches int64
	busy                     float64 // attributed busy seconds
	oneByOne                 float64 // seconds the same items would take at batch 1
	oneByOneKnown            bool
}

type modelAcct struct {
	instances   int
	since       time.Time // when instances last changed
	provisioned float64   // instance-seconds before since
	busy        float64
	batches     int64
	items       int64
}

// Ledger records batches and reports costs. It is safe for concurrent use.
type Ledger struct {
	clock        clock.Clock
	pricePerHour float64

	mu     sync.Mutex
	start  time.Time
	lines  map[key]*line
	models map[string]*modelAcct
}

// New returns a ledger that prices busy instance time at pricePerHour per
// instance-hour.
func New(clk clock.Clock, pricePerHour float64) *Ledger {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Ledger{clock: clk, pricePerHour: pricePerHour, start: clk.Now(), lines: map[key]*line{}, models: map[string]*modelAcct{}}
}

// PricePerHour is the configured instance price.
func (l *Ledger) PricePerHour() float64 { return l.pricePerHour }

// SetInstances records that model now has n provisioned instances.
func (l *Ledger) SetInstances(model string, n int) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.model(model, now)
	m.provisioned += float64(m.instances) * now.Sub(m.since).Seconds()
	m.instances = n
	m.since = now
}

func (l *Ledger) model(name string, now time.Time) *modelAcct {
	m, ok := l.models[name]
	if !ok {
		m = &modelAcct{since: now}
		l.models[name] = m
	}
	return m
}

// RecordBatch records one executed batch of model: busy is its measured
// execution time, shares its content by class, and batch1 the measured
// latency of a batch of one item at that time (0 when not yet measured).
func (l *Ledger) RecordBatch(model string, busy time.Duration, shares []Share, batch1 time.Duration) {
	total := 0
	for _, s := range shares {
		total += s.Items
	}
	if total == 0 {
		return
	}
	b := busy.Seconds()
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.model(model, l.clock.Now())
	m.busy += b
	m.batches++
	m.items += int64(total)
	for _, s := range shares {
		if s.Items == 0 && s.Requests == 0 {
			continue
		}
		k := key{model, s.Class, s.Mode}
		ln, ok := l.lines[k]
		if !ok {
			ln = &line{oneByOneKnown: true}
			l.lines[k] = ln
		}
		ln.requests += int64(s.Requests)
		ln.items += int64(s.Items)
		ln.batches++
		ln.busy += b * float64(s.Items) / float64(total)
		if batch1 > 0 {
			ln.oneByOne += batch1.Seconds() * float64(s.Items)
		} else {
			ln.oneByOneKnown = false
		}
	}
}

// Line is one (model, class, mode) row of a report.
type Line struct {
	Model        string  `json:"model"`
	Class        string  `json:"class"`
	Mode         string  `json:"mode"`
	Requests     int64   `json:"requests"`
	Items        int64   `json:"items"`
	Batches      int64   `json:"batches"`
	AvgBatchSize float64 `json:"avg_batch_items"` // items per batch this class took part in
	BusySeconds  float64 `json:"busy_seconds"`
	CostUSD      float64 `json:"cost_usd"`
	// CostPer1kBusy prices only the busy time the requests used.
	CostPer1kBusy float64 `json:"cost_per_1k_busy"`
	// CostPer1kLoaded adds the model's idle provisioned time, shared out
	// in proportion to busy time.
	CostPer1kLoaded float64 `json:"cost_per_1k_loaded"`
	// OneByOneCostUSD is what the same items would cost executed one at a
	// time, at the measured batch-1 latency; nil if that was not measured.
	OneByOneCostUSD *float64 `json:"one_by_one_cost_usd"`
	// Saving is 1 - CostUSD/OneByOneCostUSD.
	Saving *float64 `json:"saving"`
}

// ModelReport is a model's utilization.
type ModelReport struct {
	Model              string  `json:"model"`
	Instances          int     `json:"instances"`
	ProvisionedSeconds float64 `json:"provisioned_seconds"`
	BusySeconds        float64 `json:"busy_seconds"`
	Batches            int64   `json:"batches"`
	Items              int64   `json:"items"`
	Utilization        float64 `json:"utilization"`
	BusyCostUSD        float64 `json:"busy_cost_usd"`
	IdleCostUSD        float64 `json:"idle_cost_usd"`
}

// Report is a snapshot of the ledger.
type Report struct {
	PricePerInstanceHour float64       `json:"price_per_instance_hour"`
	WindowSeconds        float64       `json:"window_seconds"`
	Models               []ModelReport `json:"models"`
	Lines                []Line        `json:"lines"`
}

// Report returns the ledger's figures as of now.
func (l *Ledger) Report() Report {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	price := l.pricePerHour / 3600
	r := Report{PricePerInstanceHour: l.pricePerHour, WindowSeconds: now.Sub(l.start).Seconds()}
	idleShare := map[string]float64{} // idle seconds per busy second
	for name, m := range l.models {
		prov := m.provisioned + float64(m.instances)*now.Sub(m.since).Seconds()
		mr := ModelReport{Model: name, Instances: m.instances, ProvisionedSeconds: prov, BusySeconds: m.busy, BusyCostUSD: m.busy * price,
			Batches: m.batches, Items: m.items}
		if prov > 0 {
			mr.Utilization = min(1, m.busy/prov)
			idle := max(0, prov-m.busy)
			mr.IdleCostUSD = idle * price
			if m.busy > 0 {
				idleShare[name] = idle / m.busy
			}
		}
		r.Models = append(r.Models, mr)
	}
	for k, ln := range l.lines {
		out := Line{Model: k.model, Class: k.class.String(), Mode: string(k.mode), Requests: ln.requests, Items: ln.items,
			Batches: ln.batches, BusySeconds: ln.busy, CostUSD: ln.busy * price}
		if ln.batches > 0 {
			out.AvgBatchSize = float64(ln.items) / float64(ln.batches)
		}
		if ln.requests > 0 {
			out.CostPer1kBusy = out.CostUSD / float64(ln.requests) * 1000
			out.CostPer1kLoaded = out.CostUSD * (1 + idleShare[k.model]) / float64(ln.requests) * 1000
		}
		if ln.oneByOneKnown && ln.oneByOne > 0 {
			// The saving is a ratio of times, so that a price of 0 gives
			// a saving rather than 0/0 (NaN, which JSON cannot encode).
			c := ln.oneByOne * price
			s := 1 - ln.busy/ln.oneByOne
			out.OneByOneCostUSD, out.Saving = &c, &s
		}
		r.Lines = append(r.Lines, out)
	}
	slices.SortFunc(r.Models, func(a, b ModelReport) int { return strings.Compare(a.Model, b.Model) })
	slices.SortFunc(r.Lines, func(a, b Line) int {
		if c := strings.Compare(a.Model, b.Model); c != 0 {
			return c
		}
		if c := strings.Compare(a.Class, b.Class); c != 0 {
			return c
		}
		return strings.Compare(a.Mode, b.Mode)
	})
	return r
}
