package runner

import (
	"slices"
	"time"

	"github.com/infergate/infergate/internal/jobs"
)

// Pacing. Batch items run in the bulk lane on the capacity real-time work
// leaves. When that capacity is too little for a batch to finish inside its
// completion window, the runner asks for a guaranteed share of capacity for
// the batch's model (Config.Pace, the scheduler's SetBulkShare), up to the
// configured ceiling, and gives it back once every batch of the model is on
// track again.

// behind reports whether batch b, with remaining items left and measured
// throughput rate (ok false when the recent window has none), is projected
// to miss its completion window: it would finish later than its expiry
// minus a margin of a tenth of the window (room for finalizing, and for
// the rate to dip), or, with boosted (the share already granted), later
// than expiry minus two margins, so that the share is not given back at
// the first moment the batch is barely on track. Without a recent rate,
// the batch's average since it started counts once it has run for
// minRun; before that, it is behind only inside the margin.
func behind(now time.Time, b *jobs.Batch, remaining int, rate float64, ok, boosted bool, minRun time.Duration) bool {
	if remaining <= 0 || b.ExpiresAt.IsZero() {
		return false
	}
	margin := b.Window / 10
	deadline := b.ExpiresAt.Add(-margin)
	if boosted {
		deadline = deadline.Add(-margin)
	}
	if !ok || rate <= 0 {
		ran := now.Sub(b.InProgressAt)
		if b.InProgressAt.IsZero() || ran < minRun {
			return !now.Before(b.ExpiresAt.Add(-margin))
		}
		// A starved lane completes nothing: rate 0, behind.
		rate = float64(b.Completed+b.Failed) / ran.Seconds()
		if rate <= 0 {
			return true
		}
	}
	finish := now.Add(time.Duration(float64(remaining) / rate * float64(time.Second)))
	return finish.After(deadline)
}

// pace sets each model's guaranteed share from the in-progress batches:
// the ceiling while any of them is behind, none otherwise. It calls
// Config.Pace only when a model's share changes, and gives the share back
// for models with no batch in progress.
func (r *Runner) pace(now time.Time, active []*jobs.Batch) {
	if r.cfg.Pace == nil {
		return
	}
	want := map[string]float64{}
	for _, b := range active {
		if b.Status != jobs.StatusInProgress {
			continue
		}
		model, err := r.cfg.ModelOf(b.Endpoint)
		if err != nil {
			continue
		}
		if _, seen := want[model]; !seen {
			want[model] = 0
		}
		rate, ok := r.Rate(b.ID)
		if behind(now, b, b.Total-b.Completed-b.Failed, rate, ok, r.shares[model] > 0, r.cfg.RateWindow) {
			want[model] = r.cfg.GuaranteedShare
		}
	}
	for model, share := range r.shares {
		if _, ok := want[model]; !ok && share != 0 {
			want[model] = 0
		}
	}
	for model, share := range want {
		if r.shares[model] == share {
			continue
		}
		r.shares[model] = share
		r.log.Info("runner: bulk share", "model", model, "share", share)
		// Handed to a goroutine of normal priority: Pace takes the
		// scheduler's lock, which this loop, on an idle-priority thread
		// (ThreadInit), must never hold while the kernel keeps it waiting.
		r.paceQ <- paceCall{model, share}
	}
}

type paceCall struct {
	model string
	share float64
}

// paceLoop makes the Pace calls, in order, until the queue is closed.
func (r *Runner) paceLoop() {
	for c := range r.paceQ {
		r.cfg.Pace(c.model, c.share)
	}
}

// Backlog is one in-progress batch job's remaining work.
type Backlog struct {
	BatchID   string
	ItemsLeft int
	// Deadline is when the job's completion window ends.
	Deadline time.Time
}

// noteBacklog keeps, per model, the remaining work of the in-progress
// batches, for Backlogs.
func (r *Runner) noteBacklog(active []*jobs.Batch) {
	out := map[string][]Backlog{}
	for _, b := range active {
		if b.Status != jobs.StatusInProgress || b.ExpiresAt.IsZero() {
			continue
		}
		model, err := r.cfg.ModelOf(b.Endpoint)
		if err != nil {
			continue
		}
		if left := b.Total - b.Completed - b.Failed; left > 0 {
			out[model] = append(out[model], Backlog{BatchID: b.ID, ItemsLeft: left, Deadline: b.ExpiresAt})
		}
	}
	r.mu.Lock()
	r.backlog = out
	r.mu.Unlock()
}

// Backlogs returns the remaining work of model's in-progress batch jobs,
// as of the runner's last look at them (the autoscaler's backlog trigger).
func (r *Runner) Backlogs(model string) []Backlog {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.backlog[model])
}
