package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"
	"github.com/infergate/infergate/internal/jobs/storetest"
)

func opener(path string) storetest.Opener {
	return func(t *testing.T, clk clock.Clock) jobs.Store {
		t.Helper()
		s, err := Open(path, clk)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		return opener(filepath.Join(t.TempDir(), "jobs.db"))
	})
}

func items(n int) func(yield func(*jobs.Item, error) bool) {
	return func(yield func(*jobs.Item, error) bool) {
		for i := range n {
			if !yield(&jobs.Item{CustomID: fmt.Sprintf("c-%d", i), Body: []byte(`{"inputs":[1]}`)}, nil) {
				return
			}
		}
	}
}

// setup creates an in_progress batch of n items.
func setup(t testing.TB, s *Store, n int) *jobs.Batch {
	ctx := context.Background()
	f := &jobs.File{Owner: "o", Purpose: jobs.PurposeBatch}
	if err := s.CreateFile(ctx, f, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	b := &jobs.Batch{Owner: "o", InputFileID: f.ID, Endpoint: "/e", Status: jobs.StatusInProgress}
	if _, err := s.CreateBatch(ctx, b, items(n)); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "jobs.db")
	clk := clock.NewFake(storetest.Start)
	s, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, s, 20)
	leased, err := s.LeaseItems(ctx, b.ID, "p1", 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var rs []jobs.ItemResult
	for _, it := range leased[:6] {
		rs = append(rs, jobs.ItemResult{BatchID: b.ID, Seq: it.Seq, State: jobs.ItemDone, StatusCode: 200, Result: []byte(`{"ok":1}`)})
	}
	if _, err := s.CompleteItems(ctx, "p1", rs); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.GetBatch(ctx, "o", b.ID); err == nil {
		t.Fatal("GetBatch after Close succeeded")
	}

	s, err = Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var version int
	if err := s.r.QueryRow(`SELECT version FROM schema_version`).Scan(&version); err != nil || version != len(migrations) {
		t.Fatalf("schema version %d, %v; want %d", version, err, len(migrations))
	}
	got, err := s.GetBatch(ctx, "o", b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Total != 20 || got.Completed != 6 || !got.CreatedAt.Equal(storetest.Start) {
		t.Fatalf("after reopen %+v", got)
	}
	c, err := s.CountItems(ctx, b.ID)
	if err != nil || c != (jobs.ItemCounts{Pending: 10, Leased: 4, Done: 6}) {
		t.Fatalf("after reopen counts %+v, %v", c, err)
	}
	var mode string
	if err := s.w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q, %v", mode, err)
	}
	var sync int
	if err := s.w.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("synchronous %d, %v; want 2 (FULL)", sync, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := Open(path, clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec(`UPDATE schema_version SET version = ?`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(path, clock.Real{}); err == nil {
		s.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
}

// TestMigrateFromV1: a database made by a build that had only migration
// 1 (no batches.cost_usd) is upgraded by Open, and its batches keep their
// state and start at cost 0.
func TestMigrateFromV1(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "jobs.db")
	start := ts(storetest.Start)
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_version (version INTEGER NOT NULL)`,
		`INSERT INTO schema_version (version) VALUES (1)`,
		migrations[0],
		`INSERT INTO files (id, owner, purpose, filename, bytes, created_at, ready, updated_at)
			VALUES ('file-1', 'o', 'batch', 'in.jsonl', 1, ?1, 1, ?1)`,
		`INSERT INTO batches (id, owner, input_file_id, endpoint, completion_window, window_ns, status,
				total, completed, created_at, in_progress_at)
			VALUES ('batch_1', 'o', 'file-1', '/e', '', 0, 'in_progress', 3, 1, ?1, ?1)`,
		`INSERT INTO items (batch_pk, seq, custom_id, state) VALUES (1, 0, 'c-0', 'done'), (1, 1, 'c-1', 'pending'),
			(1, 2, 'c-2', 'pending')`,
		`INSERT INTO item_bodies (batch_pk, seq, body) VALUES (1, 0, '{}'), (1, 1, '{}'), (1, 2, '{}')`,
	} {
		if _, err := db.ExecContext(ctx, q, start); err != nil {
			db.Close()
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	clk := clock.NewFake(storetest.Start)
	s, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	var version int
	if err := s.r.QueryRow(`SELECT version FROM schema_version`).Scan(&version); err != nil || version != len(migrations) {
		t.Fatalf("schema version %d, %v; want %d", version, err, len(migrations))
	}
	got, err := s.GetBatch(ctx, "o", "batch_1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Total != 3 || got.Completed != 1 || got.CostUSD != 0 || !got.InProgressAt.Equal(storetest.Start) {
		t.Fatalf("after upgrade %+v", got)
	}
	leased, err := s.LeaseItems(ctx, "batch_1", "p1", 10, time.Minute)
	if err != nil || len(leased) != 2 {
		t.Fatalf("LeaseItems = %d items, %v", len(leased), err)
	}
	stale, err := s.CompleteItems(ctx, "p1", []jobs.ItemResult{
		{BatchID: "batch_1", Seq: 1, State: jobs.ItemDone, StatusCode: 200, Result: []byte(`{}`), CostUSD: 0.25},
		{BatchID: "batch_1", Seq: 2, State: jobs.ItemPending, Error: "retry", CostUSD: 0.5},
	})
	if err != nil || len(stale) != 0 {
		t.Fatalf("CompleteItems = %v, %v", stale, err)
	}
	s.Close()

	// Reopening an upgraded database migrates nothing and keeps the cost.
	s, err = Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err = s.GetBatch(ctx, "o", "batch_1")
	if err != nil || got.Completed != 2 || got.CostUSD != 0.75 {
		t.Fatalf("after reopen %+v, %v", got, err)
	}
}

func TestOpenBadPath(t *testing.T) {
	for _, p := range []string{"", "x.db?mode=ro", "file:x.db", ":memory:"} {
		if _, err := Open(p, nil); infergate.ErrorCode(err) != infergate.EInvalid {
			t.Errorf("Open(%q) = %v, want EInvalid", p, err)
		}
	}
}

// TestLeaseQueryPlan checks that leasing walks items_state (pending items
// in seq order) and items_lease_until (expired leases) instead of
// scanning the batch's items, and that ReleaseLeases looks up each batch's
// leased items instead of scanning the table.
func TestLeaseQueryPlan(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "jobs.db"), clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		name, query string
		args        []any
		want        []string
	}{
		{"lease", leaseSQL, []any{"o", 1, 1, 2, 3}, []string{"items_state", "items_lease_until"}},
		{"release", releaseSQL, []any{"o"}, []string{"items_state (batch_pk=? AND state=?)"}},
		// Pending items come in seq order from the index, covered: no sort,
		// no row read for an item waiting for its retry.
		{"pending", leasePendingSQL, []any{nil, nil, 1, 2, 3}, []string{"COVERING INDEX items_state (batch_pk=? AND state=?"}},
	} {
		rows, err := s.r.Query(`EXPLAIN QUERY PLAN `+tc.query, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		p := strings.Join(plan, "; ")
		for _, w := range tc.want {
			if !strings.Contains(p, w) {
				t.Errorf("%s plan does not use %s: %s", tc.name, w, p)
			}
		}
		if strings.Contains(p, "SCAN items") {
			t.Errorf("%s plan scans the items: %s", tc.name, p)
		}
		if tc.name == "pending" && strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("%s plan sorts: %s", tc.name, p)
		}
	}
}

// TestKill9 runs a worker in a child process, kills it with SIGKILL while
// it leases and completes items, and finishes the batch in this process:
// every custom_id must end exactly once in done or failed, with counters
// that match.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	const n = 3000
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := Open(path, clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, s, n)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Child$", "-test.count=1")
	cmd.Env = append(os.Environ(), "JOBS_KILL9_DB="+path, "JOBS_KILL9_BATCH="+b.ID)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once it has made some progress, mid-flight.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := s.CountItems(t.Context(), b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if c.Done+c.Failed >= n/10 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("child made no progress: %+v", c)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	s.Close()

	// Restart later than any lease the child held.
	clk := clock.NewFake(time.Now().Add(2 * time.Hour))
	s, err = Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	before, err := s.CountItems(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetBatch(ctx, "o", b.ID)
	if got.Completed != before.Done || got.Failed != before.Failed || before.Total() != n {
		t.Fatalf("after kill: batch %+v, items %+v", got, before)
	}
	t.Logf("after kill -9: %+v", before)
	for {
		its, err := s.LeaseItems(ctx, b.ID, "parent", 256, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(its) == 0 {
			break
		}
		var rs []jobs.ItemResult
		for _, it := range its {
			rs = append(rs, jobs.ItemResult{BatchID: b.ID, Seq: it.Seq, State: jobs.ItemDone, StatusCode: 200, Result: []byte(`{}`)})
		}
		if stale, err := s.CompleteItems(ctx, "parent", rs); err != nil || len(stale) > 0 {
			t.Fatalf("CompleteItems: %v, stale %v", err, stale)
		}
	}
	seen := map[string]int{}
	for _, st := range []jobs.ItemState{jobs.ItemDone, jobs.ItemFailed} {
		err := s.ItemResults(ctx, b.ID, st, func(it *jobs.Item) error { seen[it.CustomID]++; return nil })
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d custom_ids in results, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("%s appears %d times", id, k)
		}
	}
	got, _ = s.GetBatch(ctx, "o", b.ID)
	if got.Completed+got.Failed != n {
		t.Fatalf("counters %d+%d, want %d", got.Completed, got.Failed, n)
	}
}

// TestKill9Child is the worker TestKill9 kills; it does nothing when run
// on its own.
func TestKill9Child(t *testing.T) {
	path, batch := os.Getenv("JOBS_KILL9_DB"), os.Getenv("JOBS_KILL9_BATCH")
	if path == "" {
		t.Skip("run by TestKill9")
	}
	s, err := Open(path, clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; ; i++ {
		its, err := s.LeaseItems(ctx, batch, "child", 16, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(its) == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		var rs []jobs.ItemResult
		for j, it := range its {
			r := jobs.ItemResult{BatchID: batch, Seq: it.Seq, State: jobs.ItemDone, StatusCode: 200, Result: []byte(`{"child":1}`)}
			switch (i + j) % 5 {
			case 0:
				r.State, r.Error = jobs.ItemFailed, "child failure"
			case 1:
				r.State, r.NextAttemptAt = jobs.ItemPending, time.Now().Add(time.Second)
			}
			rs = append(rs, r)
		}
		// Leave some leases outstanding for the parent to rescue.
		if i%3 == 2 {
			rs = rs[:len(rs)/2]
		}
		if _, err := s.CompleteItems(ctx, "child", rs); err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkLeaseComplete(b *testing.B) {
	for _, n := range []int{64, 512} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "jobs.db"), clock.Real{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			batch := setup(b, s, b.N*n)
			ctx := context.Background()
			rs := make([]jobs.ItemResult, 0, n)
			result := []byte(`{"outputs":[{"name":"y","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`)
			b.ResetTimer()
			for range b.N {
				its, err := s.LeaseItems(ctx, batch.ID, "bench", n, time.Minute)
				if err != nil || len(its) != n {
					b.Fatalf("leased %d, %v", len(its), err)
				}
				rs = rs[:0]
				for _, it := range its {
					rs = append(rs, jobs.ItemResult{BatchID: batch.ID, Seq: it.Seq, State: jobs.ItemDone, StatusCode: 200, Result: result})
				}
				if _, err := s.CompleteItems(ctx, "bench", rs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
