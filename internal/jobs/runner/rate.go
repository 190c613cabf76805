package runner

import (
	"time"

	"github.com/infergate/infergate/internal/jobs"
)

// maxRateEvents bounds the completion events kept per batch.
const maxRateEvents = 1024

// rateWindow records a batch's recorded completions (CompleteItems calls
// that finished items) over a moving window.
type rateWindow struct {
	events []rateEvent // oldest first
}

type rateEvent struct {
	at time.Time
	n  int
}

func (w *rateWindow) add(at time.Time, n int, window time.Duration) {
	w.events = append(w.events, rateEvent{at, n})
	w.prune(at, window)
}

func (w *rateWindow) prune(now time.Time, window time.Duration) {
	cut := 0
	for cut < len(w.events) && now.Sub(w.events[cut].at) > window {
		cut++
	}
	if over := len(w.events) - cut - maxRateEvents; over > 0 {
		cut += over
	}
	if cut > 0 {
		w.events = append(w.events[:0], w.events[cut:]...)
	}
}

// countCompletions adds the items that results finished (not the retries,
// not the stale ones) to their batches' rate windows.
func (r *Runner) countCompletions(results []jobs.ItemResult, stale []jobs.ItemKey) {
	skip := make(map[jobs.ItemKey]bool, len(stale))
	for _, k := range stale {
		skip[k] = true
	}
	per := map[string]int{}
	for _, res := range results {
		if res.State.Terminal() && !skip[jobs.ItemKey{BatchID: res.BatchID, Seq: res.Seq}] {
			per[res.BatchID]++
		}
	}
	if len(per) == 0 {
		return
	}
	now := r.clk.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range per {
		w := r.rates[id]
		if w == nil {
			w = &rateWindow{}
			r.rates[id] = w
		}
		w.add(now, n, r.cfg.RateWindow)
	}
}

// Rate reports how many items per second this runner has been finishing
// for the batch, measured over the last RateWindow: the items recorded
// after the window's first recording, divided by the time since that
// recording. ok is false when there is too little to measure (fewer than
// two recordings in the window, or none at all for the batch).
func (r *Runner) Rate(batchID string) (itemsPerSec float64, ok bool) {
	now := r.clk.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.rates[batchID]
	if w == nil {
		return 0, false
	}
	w.prune(now, r.cfg.RateWindow)
	if len(w.events) < 2 {
		return 0, false
	}
	span := now.Sub(w.events[0].at)
	if span <= 0 {
		return 0, false
	}
	n := 0
	for _, e := range w.events[1:] {
		n += e.n
	}
	return float64(n) / span.Seconds(), true
}
