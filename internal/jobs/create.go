package jobs

import (
	"context"
	"math"
	"time"

	"github.com/infergate/infergate"
)

// CheckNewBatch checks the fields CreateBatch needs and returns the status
// the batch is created in (validating when unset). Every Store calls it
// first, so that they refuse the same batches with the same errors.
func CheckNewBatch(b *Batch) (Status, error) {
	if b.InputFileID == "" {
		return "", infergate.Errorf(infergate.EInvalid, "input_file_id is required")
	}
	if b.Endpoint == "" {
		return "", infergate.Errorf(infergate.EInvalid, "endpoint is required")
	}
	status := b.Status
	if status == "" {
		status = StatusValidating
	}
	switch status {
	case StatusValidating, StatusInProgress, StatusFailed:
	default:
		return "", infergate.Errorf(infergate.EInvalid, "a batch cannot be created %s", status)
	}
	if b.Window < 0 {
		return "", infergate.Errorf(infergate.EInvalid, "negative completion window")
	}
	return status, nil
}

// ItemCompleter records item outcomes (Store.CompleteItems).
type ItemCompleter interface {
	CompleteItems(ctx context.Context, owner string, results []ItemResult) (stale []ItemKey, err error)
}

// RetryItem is Store.RetryItem for stores whose CompleteItems takes a
// pending outcome: the item goes back to pending with its next attempt
// time and error, or EConflict when owner no longer holds its lease.
func RetryItem(ctx context.Context, c ItemCompleter, owner, batchID string, seq int64, nextAttemptAt time.Time, errMsg string) error {
	stale, err := c.CompleteItems(ctx, owner, []ItemResult{{
		BatchID: batchID, Seq: seq, State: ItemPending, NextAttemptAt: nextAttemptAt, Error: errMsg,
	}})
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		return infergate.Errorf(infergate.EConflict, "item %s/%d is not leased by %s", batchID, seq, owner)
	}
	return nil
}

// CheckItemResults checks the outcomes CompleteItems records: a state it
// can record, and a finite, non-negative cost (a NaN or an infinity would
// stick in the batch's cost for good, and SQLite refuses them). Every Store
// calls it first, so that they refuse the same outcomes with the same
// errors.
func CheckItemResults(results []ItemResult) error {
	for _, r := range results {
		if r.State != ItemDone && r.State != ItemFailed && r.State != ItemPending {
			return infergate.Errorf(infergate.EInvalid, "item %s/%d: cannot complete as %q", r.BatchID, r.Seq, r.State)
		}
		if math.IsNaN(r.CostUSD) || math.IsInf(r.CostUSD, 0) || r.CostUSD < 0 {
			return infergate.Errorf(infergate.EInvalid, "item %s/%d: bad cost %v", r.BatchID, r.Seq, r.CostUSD)
		}
	}
	return nil
}
