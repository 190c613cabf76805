package runner

import (
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
// throughput rate (ok false when not measured yet), is projected to miss
// its completion window: it would finish later than its expiry minus a
// margin of a tenth of the window (room for finalizing, and for the rate to
// dip). A batch with nothing measured yet is behind only once it is inside
// that margin.
func behind(now time.Time, b *jobs.Batch, remaining int, rate float64, ok bool) bool {
	if remaining <= 0 || b.ExpiresAt.IsZero() {
		return false
	}
	margin := b.Window / 10
	deadline := b.ExpiresAt.Add(-margin)
	if !ok || rate <= 0 {
		return !now.Before(deadline)
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
		if behind(now, b, b.Total-b.Completed-b.Failed, rate, ok) {
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
		r.cfg.Pace(model, share)
	}
}
