package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/jobs"
)

const activeStatuses = `('validating', 'in_progress', 'finalizing', 'cancelling')`

const batchCols = `id, owner, input_file_id, endpoint, completion_window, window_ns, status, metadata,
	idempotency_key, request_hash, total, completed, failed, cost_usd, output_file_id, error_file_id, errors,
	created_at, in_progress_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at,
	cancelled_at, expires_at`

// statusCol is the column that records when a batch entered a status.
var statusCol = map[jobs.Status]string{
	jobs.StatusValidating: "created_at",
	jobs.StatusInProgress: "in_progress_at",
	jobs.StatusFinalizing: "finalizing_at",
	jobs.StatusCompleted:  "completed_at",
	jobs.StatusFailed:     "failed_at",
	jobs.StatusExpired:    "expired_at",
	jobs.StatusCancelling: "cancelling_at",
	jobs.StatusCancelled:  "cancelled_at",
}

func scanBatch(row pgx.Row) (*jobs.Batch, error) {
	var b jobs.Batch
	var window int64
	var status string
	var metadata, errs []byte
	var t [9]int64
	err := row.Scan(&b.ID, &b.Owner, &b.InputFileID, &b.Endpoint, &b.CompletionWindow, &window, &status, &metadata,
		&b.IdempotencyKey, &b.RequestHash, &b.Total, &b.Completed, &b.Failed, &b.CostUSD, &b.OutputFileID, &b.ErrorFileID, &errs,
		&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8])
	if err != nil {
		return nil, err
	}
	b.Window = time.Duration(window)
	b.Status = jobs.Status(status)
	if len(metadata) > 0 {
		if err := json.Unmarshal(metadata, &b.Metadata); err != nil {
			return nil, fmt.Errorf("batch %s: metadata: %w", b.ID, err)
		}
	}
	if len(errs) > 0 {
		if err := json.Unmarshal(errs, &b.Errors); err != nil {
			return nil, fmt.Errorf("batch %s: errors: %w", b.ID, err)
		}
	}
	b.CreatedAt, b.InProgressAt, b.FinalizingAt = tm(t[0]), tm(t[1]), tm(t[2])
	b.CompletedAt, b.FailedAt, b.ExpiredAt = tm(t[3]), tm(t[4]), tm(t[5])
	b.CancellingAt, b.CancelledAt, b.ExpiresAt = tm(t[6]), tm(t[7]), tm(t[8])
	return &b, nil
}

// jsonOrNull marshals v, or returns nil (SQL NULL) for an empty v.
func jsonOrNull[T any](v []T) (any, error) {
	if len(v) == 0 {
		return nil, nil
	}
	p, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(p), nil
}

// CreateBatch implements jobs.Store.
//
// Concurrent creations with one idempotency key meet at the insert of the
// batch row: the unique index makes the later ones wait for the first to
// commit or roll back, and then either insert (it rolled back) or find its
// batch (ON CONFLICT DO NOTHING, then a fresh read), before reading any
// item.
func (s *Store) CreateBatch(ctx context.Context, b *jobs.Batch, items iter.Seq2[*jobs.Item, error]) (bool, error) {
	status, err := jobs.CheckNewBatch(b)
	if err != nil {
		return false, err
	}
	var metadata any
	if len(b.Metadata) > 0 {
		p, err := json.Marshal(b.Metadata)
		if err != nil {
			return false, err
		}
		metadata = string(p)
	}
	errs, err := jsonOrNull(b.Errors)
	if err != nil {
		return false, err
	}
	id := b.ID
	if id == "" {
		id = jobs.NewBatchID()
	}
	now := tm(ts(s.clk.Now()))
	var expires time.Time
	if b.Window > 0 {
		expires = now.Add(b.Window)
	}

	var existing *jobs.Batch
	var total int
	// findExisting looks for the batch of b's idempotency key.
	findExisting := func(tx pgx.Tx) (bool, error) {
		e, err := scanBatch(tx.QueryRow(ctx, `SELECT `+batchCols+` FROM batches WHERE owner = $1 AND idempotency_key = $2`,
			b.Owner, b.IdempotencyKey))
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if e.RequestHash != b.RequestHash {
			return false, infergate.Errorf(infergate.EConflict,
				"idempotency key %q was already used for a different request (batch %s)", b.IdempotencyKey, e.ID)
		}
		existing = e
		return true, nil
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		if b.IdempotencyKey != "" {
			if found, err := findExisting(tx); found || err != nil {
				return err
			}
		}
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM files WHERE id = $1 AND owner = $2 AND ready FOR KEY SHARE`,
			b.InputFileID, b.Owner).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return infergate.Errorf(infergate.ENotFound, "no such file: %s", b.InputFileID)
		}
		if err != nil {
			return err
		}
		// The status's timestamp is now: created_at, and for a batch
		// created in_progress or failed, its column too.
		var pk int64
		err = tx.QueryRow(ctx, `INSERT INTO batches (id, owner, input_file_id, endpoint, completion_window, window_ns,
				status, metadata, idempotency_key, request_hash, errors, created_at, expires_at, in_progress_at, failed_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7::text, $8, $9, $10, $11, $12::bigint, $13,
				CASE WHEN $7::text = 'in_progress' THEN $12::bigint ELSE 0 END, CASE WHEN $7::text = 'failed' THEN $12::bigint ELSE 0 END)
			ON CONFLICT DO NOTHING RETURNING pk`,
			id, b.Owner, b.InputFileID, b.Endpoint, b.CompletionWindow, int64(b.Window),
			string(status), metadata, b.IdempotencyKey, b.RequestHash, errs, ts(now), ts(expires)).Scan(&pk)
		if errors.Is(err, pgx.ErrNoRows) {
			// A conflict: on the idempotency key (a concurrent creation
			// committed meanwhile), or on the ID.
			if b.IdempotencyKey != "" {
				if found, err := findExisting(tx); found || err != nil {
					return err
				}
			}
			return infergate.Errorf(infergate.EConflict, "batch %s already exists", id)
		}
		if err != nil {
			return err
		}
		if total, err = insertItems(ctx, tx, pk, items); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE batches SET total = $1 WHERE pk = $2`, total, pk)
		return err
	})
	if err != nil {
		return false, err
	}
	if existing != nil {
		*b = *existing
		return true, nil
	}
	b.ID, b.Status, b.CreatedAt, b.ExpiresAt, b.Total = id, status, now, expires, total
	b.InProgressAt, b.FinalizingAt, b.CompletedAt, b.FailedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	b.ExpiredAt, b.CancellingAt, b.CancelledAt = time.Time{}, time.Time{}, time.Time{}
	*b.StatusTime(status) = now
	b.Completed, b.Failed, b.CostUSD, b.OutputFileID, b.ErrorFileID = 0, 0, 0, "", ""
	return false, nil
}

// insertItems copies the items into the tables in chunks of up to
// itemChunk rows (or itemChunkBytes of bodies) and returns how many there
// were.
func insertItems(ctx context.Context, tx pgx.Tx, batchPK int64, items iter.Seq2[*jobs.Item, error]) (int, error) {
	if items == nil {
		return 0, nil
	}
	rows := make([][]any, 0, itemChunk)
	bodies := make([][]any, 0, itemChunk)
	ids := make(map[string]bool, itemChunk)
	var seq int64
	bytes := 0
	flush := func() error {
		if len(rows) == 0 {
			return nil
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"batch_pk", "seq", "custom_id"}, pgx.CopyFromRows(rows))
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == uniqueViolation {
			// A custom_id of an earlier chunk (those of this one are
			// checked below). The detail names it: "Key (batch_pk,
			// custom_id)=(7, c-1) already exists."
			return infergate.Errorf(infergate.EInvalid, "duplicate custom_id: %s", pe.Detail)
		}
		if err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"item_bodies"}, []string{"batch_pk", "seq", "body"}, pgx.CopyFromRows(bodies)); err != nil {
			return err
		}
		rows, bodies, bytes = rows[:0], bodies[:0], 0
		clear(ids)
		return nil
	}
	for it, err := range items {
		if err != nil {
			return 0, err
		}
		if it == nil {
			return 0, infergate.Errorf(infergate.EInvalid, "item %d is missing", seq)
		}
		if it.CustomID == "" {
			return 0, infergate.Errorf(infergate.EInvalid, "item %d has no custom_id", seq)
		}
		if ids[it.CustomID] {
			return 0, infergate.Errorf(infergate.EInvalid, "duplicate custom_id %q", it.CustomID)
		}
		ids[it.CustomID] = true
		body := it.Body
		if body == nil {
			body = []byte{}
		}
		rows = append(rows, []any{batchPK, seq, it.CustomID})
		bodies = append(bodies, []any{batchPK, seq, body})
		seq++
		bytes += len(body)
		if len(rows) == itemChunk || bytes >= itemChunkBytes {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return int(seq), nil
}

// GetBatch implements jobs.Store.
func (s *Store) GetBatch(ctx context.Context, owner, id string) (*jobs.Batch, error) {
	b, err := scanBatch(s.r.QueryRow(ctx, `SELECT `+batchCols+` FROM batches WHERE id = $1 AND owner = $2`, id, owner))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, infergate.Errorf(infergate.ENotFound, "no such batch: %s", id)
	}
	return b, s.dbErr(err)
}

func (s *Store) queryBatches(ctx context.Context, query string, args ...any) ([]*jobs.Batch, error) {
	rows, err := s.r.Query(ctx, query, args...)
	if err != nil {
		return nil, s.dbErr(err)
	}
	bs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*jobs.Batch, error) { return scanBatch(row) })
	return bs, s.dbErr(err)
}

// ListBatches implements jobs.Store.
func (s *Store) ListBatches(ctx context.Context, owner, after string, limit int) ([]*jobs.Batch, bool, error) {
	limit = jobs.ClampLimit(limit)
	cursor := int64(1<<63 - 1)
	if after != "" {
		err := s.r.QueryRow(ctx, `SELECT pk FROM batches WHERE id = $1 AND owner = $2`, after, owner).Scan(&cursor)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, false, infergate.Errorf(infergate.EInvalid, "after: no such batch: %s", after)
		}
		if err != nil {
			return nil, false, s.dbErr(err)
		}
	}
	bs, err := s.queryBatches(ctx, `SELECT `+batchCols+` FROM batches WHERE owner = $1 AND pk < $2 ORDER BY pk DESC LIMIT $3`,
		owner, cursor, limit+1)
	if err != nil {
		return nil, false, err
	}
	more := len(bs) > limit
	if more {
		bs = bs[:limit]
	}
	return bs, more, nil
}

// ActiveBatches implements jobs.Store.
func (s *Store) ActiveBatches(ctx context.Context) ([]*jobs.Batch, error) {
	return s.queryBatches(ctx, `SELECT `+batchCols+` FROM batches WHERE status IN `+activeStatuses+` ORDER BY pk`)
}

// UpdateBatchStatus implements jobs.Store.
func (s *Store) UpdateBatchStatus(ctx context.Context, id string, from, to jobs.Status, at time.Time) error {
	return s.transition(ctx, id, from, to, at, jobs.Outcome{})
}

// FinishBatch implements jobs.Store.
func (s *Store) FinishBatch(ctx context.Context, id string, from, to jobs.Status, at time.Time, out jobs.Outcome) error {
	if !to.Terminal() {
		return infergate.Errorf(infergate.EInvalid, "FinishBatch: %s is not a terminal status", to)
	}
	return s.transition(ctx, id, from, to, at, out)
}

// transition is one compare-and-set UPDATE; when it matches no row, a
// second read tells a missing batch from one in another status.
func (s *Store) transition(ctx context.Context, id string, from, to jobs.Status, at time.Time, out jobs.Outcome) error {
	if !jobs.CanTransition(from, to) {
		return infergate.Errorf(infergate.EInvalid, "a batch cannot go from %s to %s", from, to)
	}
	if at.IsZero() {
		at = s.clk.Now()
	}
	errs, err := jsonOrNull(out.Errors)
	if err != nil {
		return err
	}
	tag, err := s.w.Exec(ctx, `UPDATE batches SET status = $1, `+statusCol[to]+` = $2,
			errors = CASE WHEN $3::jsonb IS NULL THEN errors ELSE coalesce(errors, '[]'::jsonb) || $3::jsonb END,
			output_file_id = CASE WHEN $4::text <> '' THEN $4::text ELSE output_file_id END,
			error_file_id = CASE WHEN $5::text <> '' THEN $5::text ELSE error_file_id END
		WHERE id = $6 AND status = $7`,
		string(to), ts(at), errs, out.OutputFileID, out.ErrorFileID, id, string(from))
	if err != nil {
		return s.dbErr(err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var status string
	err = s.w.QueryRow(ctx, `SELECT status FROM batches WHERE id = $1`, id).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return infergate.Errorf(infergate.ENotFound, "no such batch: %s", id)
	}
	if err != nil {
		return s.dbErr(err)
	}
	return infergate.Errorf(infergate.EConflict, "batch %s is %s, not %s", id, status, from)
}
