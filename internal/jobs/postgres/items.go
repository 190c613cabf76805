package postgres

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/jobs"
)

// batchStatus returns the batch's pk and status.
func batchStatus(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id string) (int64, jobs.Status, error) {
	var pk int64
	var status string
	err := q.QueryRow(ctx, `SELECT pk, status FROM batches WHERE id = $1`, id).Scan(&pk, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", infergate.Errorf(infergate.ENotFound, "no such batch: %s", id)
	}
	return pk, jobs.Status(status), err
}

// leaseSQL selects and marks up to $3 due items of batch $1 (if it is
// in_progress) in one statement. The CTE walks items_runnable in seq
// order and locks each due row it can (FOR UPDATE SKIP LOCKED, under the
// LIMIT, so skipped rows do not count); a row changed by a leaser that
// committed after this statement's snapshot is locked in its newest
// version and only kept if that is still due. The UPDATE then marks
// exactly the locked rows and returns them with their bodies (one primary
// key lookup each).
const leaseSQL = `
WITH due AS MATERIALIZED (
	SELECT i.batch_pk, i.seq FROM items i
	WHERE i.batch_pk = (SELECT pk FROM batches WHERE id = $1 AND status = 'in_progress')
		AND i.state IN ('pending', 'leased')
		AND ((i.state = 'pending' AND i.next_attempt_at <= $2) OR (i.state = 'leased' AND i.lease_until <= $2))
	ORDER BY i.seq
	LIMIT $3
	FOR UPDATE SKIP LOCKED)
UPDATE items i SET state = 'leased', lease_owner = $4, lease_until = $5, attempts = i.attempts + 1
WHERE i.batch_pk = (SELECT batch_pk FROM due LIMIT 1) AND i.seq = ANY (ARRAY(SELECT seq FROM due))
RETURNING i.seq, i.custom_id, i.attempts, i.next_attempt_at, i.error,
	(SELECT b.body FROM item_bodies b WHERE b.batch_pk = i.batch_pk AND b.seq = i.seq)`

// LeaseItems implements jobs.Store: see leaseSQL. When it leases nothing,
// a second read tells a missing or not in_progress batch from one with
// nothing due.
func (s *Store) LeaseItems(ctx context.Context, batchID, owner string, n int, leaseFor time.Duration) ([]*jobs.Item, error) {
	switch {
	case n <= 0:
		return nil, infergate.Errorf(infergate.EInvalid, "lease: n must be positive")
	case leaseFor <= 0:
		return nil, infergate.Errorf(infergate.EInvalid, "lease: duration must be positive")
	case owner == "":
		return nil, infergate.Errorf(infergate.EInvalid, "lease: owner is required")
	}
	now := s.clk.Now()
	until := tm(ts(now.Add(leaseFor)))
	rows, err := s.w.Query(ctx, leaseSQL, batchID, ts(now), n, owner, ts(until))
	if err != nil {
		return nil, s.dbErr(err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*jobs.Item, error) {
		it := &jobs.Item{BatchID: batchID, State: jobs.ItemLeased, LeaseOwner: owner, LeaseUntil: until}
		var next int64
		if err := row.Scan(&it.Seq, &it.CustomID, &it.Attempts, &next, &it.Error, &it.Body); err != nil {
			return nil, err
		}
		it.NextAttemptAt = tm(next)
		return it, nil
	})
	if err != nil {
		return nil, s.dbErr(err)
	}
	if len(items) == 0 {
		_, status, err := batchStatus(ctx, s.r, batchID)
		if err != nil {
			return nil, s.dbErr(err)
		}
		if status != jobs.StatusInProgress {
			return nil, infergate.Errorf(infergate.EConflict, "batch %s is %s, not in_progress", batchID, status)
		}
		return nil, nil
	}
	slices.SortFunc(items, func(a, b *jobs.Item) int { return cmp.Compare(a.Seq, b.Seq) })
	return items, nil
}

// CompleteItems implements jobs.Store. Per batch, in pk order, it locks
// the items still leased by owner in seq order, then updates them from
// arrays in one statement; the counters are bumped last.
func (s *Store) CompleteItems(ctx context.Context, owner string, results []jobs.ItemResult) ([]jobs.ItemKey, error) {
	if err := jobs.CheckItemResults(results); err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, nil
	}
	var stale []jobs.ItemKey
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		stale, err = completeItems(ctx, tx, owner, results)
		return err
	})
	if err != nil {
		return nil, err
	}
	return stale, nil
}

func completeItems(ctx context.Context, tx pgx.Tx, owner string, results []jobs.ItemResult) ([]jobs.ItemKey, error) {
	var ids []string
	for _, r := range results {
		if !slices.Contains(ids, r.BatchID) {
			ids = append(ids, r.BatchID)
		}
	}
	pks := make(map[string]int64, len(ids))
	rows, err := tx.Query(ctx, `SELECT id, pk FROM batches WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	var id string
	var pk int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &pk}, func() error { pks[id] = pk; return nil }); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, ok := pks[id]; !ok {
			return nil, infergate.Errorf(infergate.ENotFound, "no such batch: %s", id)
		}
	}
	// Lock order: batches by pk, items by seq; the first result for an
	// item wins, a repeat is stale (the item is no longer leased).
	type res struct {
		pk int64
		jobs.ItemResult
	}
	sorted := make([]res, len(results))
	for i, r := range results {
		sorted[i] = res{pks[r.BatchID], r}
	}
	slices.SortStableFunc(sorted, func(a, b res) int {
		return cmp.Or(cmp.Compare(a.pk, b.pk), cmp.Compare(a.Seq, b.Seq))
	})
	var stale []jobs.ItemKey
	type bump struct {
		pk, done, failed int64
		cost             float64
	}
	var bumps []bump
	for group := range chunkBy(sorted, func(r res) int64 { return r.pk }) {
		pk := group[0].pk
		var (
			seqs    []int64
			states  []string
			codes   []int32
			results [][]byte
			errs    []string
			nexts   []int64
			costs   = map[int64]float64{}
		)
		for i, r := range group {
			if i > 0 && r.Seq == group[i-1].Seq {
				stale = append(stale, jobs.ItemKey{BatchID: r.BatchID, Seq: r.Seq})
				continue
			}
			seqs = append(seqs, r.Seq)
			states = append(states, string(r.State))
			codes = append(codes, int32(r.StatusCode))
			results = append(results, r.Result)
			errs = append(errs, r.Error)
			nexts = append(nexts, ts(r.NextAttemptAt))
			costs[r.Seq] = r.CostUSD
		}
		rows, err := tx.Query(ctx, completeSQL,
			pk, seqs, owner, states, codes, results, errs, nexts)
		if err != nil {
			return nil, err
		}
		applied := map[int64]bool{}
		b := bump{pk: pk}
		var seq int64
		var state string
		if _, err := pgx.ForEachRow(rows, []any{&seq, &state}, func() error {
			applied[seq] = true
			switch jobs.ItemState(state) {
			case jobs.ItemDone:
				b.done++
			case jobs.ItemFailed:
				b.failed++
			}
			// Every applied outcome's cost counts, a retry's too: the
			// attempt's work was done.
			b.cost += costs[seq]
			return nil
		}); err != nil {
			return nil, err
		}
		for _, sq := range seqs {
			if !applied[sq] {
				stale = append(stale, jobs.ItemKey{BatchID: group[0].BatchID, Seq: sq})
			}
		}
		if b.done > 0 || b.failed > 0 || b.cost != 0 {
			bumps = append(bumps, b)
		}
	}
	for _, b := range bumps {
		if _, err := tx.Exec(ctx, `UPDATE batches SET completed = completed + $1, failed = failed + $2, cost_usd = cost_usd + $3
			WHERE pk = $4`, b.done, b.failed, b.cost, b.pk); err != nil {
			return nil, err
		}
	}
	// Report stale items in the order they were given.
	order := make(map[jobs.ItemKey]int, len(results))
	for i, r := range results {
		k := jobs.ItemKey{BatchID: r.BatchID, Seq: r.Seq}
		if _, ok := order[k]; !ok {
			order[k] = i
		}
	}
	slices.SortStableFunc(stale, func(a, b jobs.ItemKey) int { return cmp.Compare(order[a], order[b]) })
	return stale, nil
}

// completeSQL records outcomes of items of batch $1 still leased by $3,
// given as arrays ($2: seqs, sorted; $4..$8: state, status code, result,
// error, next attempt). It locks them in seq order first (the lock order),
// then updates exactly those, found by primary key.
const completeSQL = `
WITH mine AS MATERIALIZED (
	SELECT seq FROM items
	WHERE batch_pk = $1 AND seq = ANY($2) AND state = 'leased' AND lease_owner = $3
	ORDER BY seq
	FOR UPDATE)
UPDATE items i SET
	state = r.state,
	result = CASE WHEN r.state = 'pending' THEN i.result ELSE r.result END,
	status_code = CASE WHEN r.state = 'pending' THEN i.status_code ELSE r.code END,
	next_attempt_at = CASE WHEN r.state = 'pending' THEN r.next ELSE i.next_attempt_at END,
	error = r.error,
	lease_until = 0
FROM unnest($2::bigint[], $4::text[], $5::integer[], $6::bytea[], $7::text[], $8::bigint[])
	AS r (seq, state, code, result, error, next)
WHERE i.batch_pk = $1 AND i.seq = ANY (ARRAY(SELECT seq FROM mine)) AND i.seq = r.seq
RETURNING i.seq, i.state`

// chunkBy yields the runs of s that share a key.
func chunkBy[T any, K comparable](s []T, key func(T) K) func(yield func([]T) bool) {
	return func(yield func([]T) bool) {
		for i := 0; i < len(s); {
			j := i + 1
			for j < len(s) && key(s[j]) == key(s[i]) {
				j++
			}
			if !yield(s[i:j]) {
				return
			}
			i = j
		}
	}
}

// RetryItem implements jobs.Store.
func (s *Store) RetryItem(ctx context.Context, owner, batchID string, seq int64, nextAttemptAt time.Time, errMsg string) error {
	return jobs.RetryItem(ctx, s, owner, batchID, seq, nextAttemptAt, errMsg)
}

// ReleaseLeases implements jobs.Store.
func (s *Store) ReleaseLeases(ctx context.Context, owner string) (int, error) {
	tag, err := s.w.Exec(ctx, `
WITH mine AS MATERIALIZED (
	SELECT batch_pk, seq FROM items WHERE state = 'leased' AND lease_owner = $1
	ORDER BY batch_pk, seq
	FOR UPDATE)
UPDATE items i SET state = 'pending', attempts = greatest(i.attempts - 1, 0), lease_until = 0, next_attempt_at = 0
FROM mine WHERE i.batch_pk = mine.batch_pk AND i.seq = mine.seq AND i.state = 'leased' AND i.lease_owner = $1`, owner)
	if err != nil {
		return 0, s.dbErr(err)
	}
	return int(tag.RowsAffected()), nil
}

// CancelPending implements jobs.Store.
func (s *Store) CancelPending(ctx context.Context, batchID, reason string) (int, error) {
	now := s.clk.Now()
	var n int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		pk, _, err := batchStatus(ctx, tx, batchID)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `
WITH idle AS MATERIALIZED (
	SELECT seq FROM items
	WHERE batch_pk = $1 AND state IN ('pending', 'leased') AND (state = 'pending' OR lease_until <= $3)
	ORDER BY seq
	FOR UPDATE)
UPDATE items i SET state = 'failed', error = $2, result = NULL, status_code = 0, lease_until = 0
FROM idle WHERE i.batch_pk = $1 AND i.seq = idle.seq`, pk, reason, ts(now))
		if err != nil {
			return err
		}
		if n = tag.RowsAffected(); n == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE batches SET failed = failed + $1 WHERE pk = $2`, n, pk)
		return err
	})
	return int(n), err
}

// CountItems implements jobs.Store.
func (s *Store) CountItems(ctx context.Context, batchID string) (jobs.ItemCounts, error) {
	var c jobs.ItemCounts
	pk, _, err := batchStatus(ctx, s.r, batchID)
	if err != nil {
		return c, s.dbErr(err)
	}
	rows, err := s.r.Query(ctx, `SELECT state, count(*) FROM items WHERE batch_pk = $1 GROUP BY state`, pk)
	if err != nil {
		return c, s.dbErr(err)
	}
	var state string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		switch jobs.ItemState(state) {
		case jobs.ItemPending:
			c.Pending = n
		case jobs.ItemLeased:
			c.Leased = n
		case jobs.ItemDone:
			c.Done = n
		case jobs.ItemFailed:
			c.Failed = n
		}
		return nil
	})
	return c, s.dbErr(err)
}

// ItemResults implements jobs.Store. It reads resultPage items per query
// and calls fn with no query open.
func (s *Store) ItemResults(ctx context.Context, batchID string, state jobs.ItemState, fn func(*jobs.Item) error) error {
	if !state.Valid() {
		return infergate.Errorf(infergate.EInvalid, "unknown item state %q", state)
	}
	pk, _, err := batchStatus(ctx, s.r, batchID)
	if err != nil {
		return s.dbErr(err)
	}
	after := int64(-1)
	for {
		rows, err := s.r.Query(ctx, `SELECT seq, custom_id, attempts, lease_owner, lease_until, next_attempt_at,
				result, status_code, error
			FROM items WHERE batch_pk = $1 AND state = $2 AND seq > $3 ORDER BY seq LIMIT $4`,
			pk, string(state), after, resultPage)
		if err != nil {
			return s.dbErr(err)
		}
		page, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*jobs.Item, error) {
			it := &jobs.Item{BatchID: batchID, State: state}
			var until, next int64
			if err := row.Scan(&it.Seq, &it.CustomID, &it.Attempts, &it.LeaseOwner, &until, &next,
				&it.Result, &it.StatusCode, &it.Error); err != nil {
				return nil, err
			}
			it.LeaseUntil, it.NextAttemptAt = tm(until), tm(next)
			return it, nil
		})
		if err != nil {
			return s.dbErr(err)
		}
		for _, it := range page {
			if err := fn(it); err != nil {
				return err
			}
		}
		if len(page) < resultPage {
			return nil
		}
		after = page[len(page)-1].Seq
	}
}
