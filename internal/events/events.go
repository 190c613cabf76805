// Package events keeps the recent decisions of infergate's live controllers
// (mode switches, rollbacks, scaling) in memory for GET /v1/events and the
// dashboard, and reports each as a log line and a metric.
package events

import (
	"log/slog"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
)

// DefaultCapacity is how many events a Log keeps.
const DefaultCapacity = 1000

// Log is a bounded, ordered record of events. It is safe for concurrent
// use.
type Log struct {
	clock clock.Clock
	log   *slog.Logger
	count *prometheus.CounterVec

	mu     sync.Mutex
	buf    []infergate.Event // ring, oldest at start once full
	start  int
	nextID int64
	cap    int
}

// New returns a log keeping the last capacity events (DefaultCapacity when
// <= 0), counting them in infergate_events_total on reg (when not nil).
func New(clk clock.Clock, logger *slog.Logger, reg prometheus.Registerer, capacity int) *Log {
	if clk == nil {
		clk = clock.Real{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	l := &Log{clock: clk, log: logger, cap: capacity, nextID: 1,
		count: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergate_events_total", Help: "Live-control decisions (mode switches, rollbacks, scaling) by model, kind and outcome.",
		}, []string{"model", "kind", "outcome"})}
	if reg != nil {
		reg.MustRegister(l.count)
	}
	return l
}

// Add stamps e with the next ID and the time (unless set), records it, and
// returns it.
func (l *Log) Add(e infergate.Event) infergate.Event {
	l.mu.Lock()
	e.ID = l.nextID
	l.nextID++
	if e.Time.IsZero() {
		e.Time = l.clock.Now()
	}
	if len(l.buf) < l.cap {
		l.buf = append(l.buf, e)
	} else {
		l.buf[l.start] = e
		l.start = (l.start + 1) % l.cap
	}
	l.mu.Unlock()
	l.count.WithLabelValues(e.Model, e.Kind, e.Outcome).Inc()
	attrs := []any{"id", e.ID, "kind", e.Kind, "model", e.Model, "outcome", e.Outcome}
	for _, kv := range [][2]string{{"class", e.Class}, {"trigger", e.Trigger}, {"from", e.From}, {"to", e.To}} {
		if kv[1] != "" {
			attrs = append(attrs, kv[0], kv[1])
		}
	}
	keys := make([]string, 0, len(e.Figures))
	for k := range e.Figures {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		attrs = append(attrs, k, e.Figures[k])
	}
	l.log.Info("event: "+e.Message, attrs...)
	return e
}

// List returns, oldest first (newest last), the kept events with an ID
// greater than after, at most limit of the newest of them (all when limit
// <= 0), optionally only those of model (all when "").
func (l *Log) List(after int64, limit int, model string) []infergate.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]infergate.Event, 0, len(l.buf))
	for i := range l.buf {
		e := l.buf[(l.start+i)%len(l.buf)]
		if e.ID > after && (model == "" || e.Model == model) {
			out = append(out, e)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}
