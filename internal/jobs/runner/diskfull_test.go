//go:build linux

package runner

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"
	"github.com/infergate/infergate/internal/jobs/sqlite"
)

// TestDiskFull fills the file system under a running job's SQLite store
// (issue 6): the store's writes must fail with EUnavailable ("disk is
// full"), the runner must keep going without failing or losing items, the
// database must stay intact with every item pending, leased or done with a
// result, and once space returns the job must complete with every
// custom_id recorded exactly once.
//
// It needs to mount a tmpfs (root or CAP_SYS_ADMIN) and skips otherwise.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test: several seconds")
	}
	const (
		n      = 3000
		before = 1000 // items done before the disk fills
	)
	dir := mountTmpfs(t, 16<<20)
	path := filepath.Join(dir, "jobs.db")
	st, err := sqlite.Open(path, clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	raw := openRaw(t, path)
	b := createBatch(t, st, n, 24*time.Hour)

	ex := &gateExec{fakeExec: newFakeExec(), from: before, open: make(chan struct{}), quit: make(chan struct{})}
	ws := &watchStore{Store: st}
	cfg := testConfig(ws, ex, "r1")
	cfg.LeaseBatch, cfg.Concurrency = 64, 64
	// Outcomes that could not be recorded stay leased until their lease
	// ends; keep that short so that the test does not wait long for them.
	cfg.LeaseFor = 2 * time.Second
	start(t, cfg)
	t.Cleanup(func() { close(ex.quit) }) // before the runner stops, if the test ends early

	// The first items are done; the next ones hold every slot.
	waitFor(t, "the first items done", func() bool {
		return int(ex.held.Load()) == cfg.Concurrency && counts(t, st, b.ID).Done == before
	})
	// Empty the WAL, so that the next write needs new blocks (a WAL of
	// reusable frames would absorb some writes after the disk filled).
	waitFor(t, "a WAL checkpoint", func() bool {
		var busy, logged, moved int
		if err := raw.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logged, &moved); err != nil {
			t.Fatal(err)
		}
		return busy == 0
	})
	filler := filepath.Join(dir, "filler")
	filled := fillDisk(t, filler)
	t.Logf("disk full: %d items done, %d filler bytes, %d bytes free", before, filled, freeBytes(t, dir))

	close(ex.open) // the held items finish; their outcomes cannot be recorded
	waitFor(t, "store errors", func() bool {
		e := ws.stats()
		// The collector keeps retrying its outcomes; leasing pauses while
		// it cannot record them, so LeaseItems may see no error at all.
		return e.ops["CompleteItems"] >= 3
	})

	// While the disk is full: nothing half-written, no item failed, and
	// reads still work.
	c := checkDB(t, raw, st, b.ID, n)
	if c.Done < before || c.Failed != 0 {
		t.Errorf("while full: %+v, want at least %d done and none failed", c, before)
	}
	t.Logf("while full: items pending=%d leased=%d done=%d failed=%d, integrity ok", c.Pending, c.Leased, c.Done, c.Failed)

	// Every store error so far says the disk is full.
	full := ws.stats()
	for _, err := range full.errs {
		if infergate.ErrorCode(err) != infergate.EUnavailable || !strings.Contains(infergate.ErrorMessage(err), "disk is full") {
			t.Errorf("store error while the disk was full: %v", err)
		}
	}
	t.Logf("while full: %d store errors %v, first: %v", len(full.errs), full.ops, full.errs[0])

	// Space returns: the runner resumes and completes the job.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitFor(t, "the first outcome recorded after space returned", func() bool {
		return counts(t, st, b.ID).Done > c.Done
	})
	resumed := time.Since(freed)
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	finished := time.Since(freed)
	out, errs := results(t, st, b, n)
	if len(out) != n || len(errs) != 0 {
		t.Errorf("%d output lines and %d error lines, want %d and 0", len(out), len(errs), n)
	}
	c = checkDB(t, raw, st, b.ID, n)
	rerun := 0
	for i := range n {
		if ex.Calls(cid(i)) > 1 {
			rerun++
		}
	}
	after := ws.stats()
	for _, err := range after.errs[len(full.errs):] {
		if infergate.ErrorCode(err) != infergate.EUnavailable {
			t.Errorf("store error after space returned: %v", err)
		}
	}
	t.Logf("space returned: first outcome recorded after %v, batch completed after %v; %d store errors after space returned",
		resumed.Round(time.Millisecond), finished.Round(time.Millisecond), len(after.errs)-len(full.errs))
	t.Logf("final: %d output lines, %d error lines, items done=%d failed=%d, %d items executed more than once",
		len(out), len(errs), c.Done, c.Failed, rerun)
}

// mountTmpfs mounts a tmpfs of size bytes on a new temporary directory,
// and unmounts it when the test ends.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// fillDisk writes a file at path until the file system has not a byte
// left, and returns its size.
func fillDisk(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var size int64
	for chunk := len(buf); chunk > 0; {
		k, err := f.Write(buf[:chunk])
		size += int64(k)
		switch {
		case errors.Is(err, syscall.ENOSPC):
			chunk /= 2
		case err != nil:
			t.Fatal(err)
		}
	}
	return size
}

func freeBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	var s syscall.Statfs_t
	if err := syscall.Statfs(dir, &s); err != nil {
		t.Fatal(err)
	}
	return s.Bavail * uint64(s.Bsize)
}

// openRaw opens a second connection to the store's database, to check it
// from outside the store.
func openRaw(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// checkDB checks the database's integrity and the items of batch id: n
// of them, no custom_id twice, every one pending, leased (with an owner),
// done with a result or failed, and the batch's counters and the store's
// CountItems agreeing with them. It returns the counts.
func checkDB(t *testing.T, db *sql.DB, st jobs.Store, id string, n int) jobs.ItemCounts {
	t.Helper()
	var integrity string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&integrity); err != nil {
		t.Fatal(err)
	}
	if integrity != "ok" {
		t.Errorf("integrity_check: %s", integrity)
	}
	var c jobs.ItemCounts
	var total, distinct, other, noResult, noLease, bodies, completed, failed int
	err := db.QueryRow(`SELECT count(*), count(DISTINCT custom_id),
			coalesce(sum(state = 'pending'), 0), coalesce(sum(state = 'leased'), 0),
			coalesce(sum(state = 'done'), 0), coalesce(sum(state = 'failed'), 0),
			coalesce(sum(state NOT IN ('pending', 'leased', 'done', 'failed')), 0),
			coalesce(sum(state = 'done' AND (result IS NULL OR status_code <> 200)), 0),
			coalesce(sum(state = 'leased' AND (lease_owner = '' OR lease_until = 0)), 0),
			(SELECT count(*) FROM item_bodies WHERE batch_pk = b.pk),
			b.completed, b.failed
		FROM batches b JOIN items i ON i.batch_pk = b.pk WHERE b.id = ?`, id).Scan(
		&total, &distinct, &c.Pending, &c.Leased, &c.Done, &c.Failed, &other, &noResult, &noLease, &bodies, &completed, &failed)
	if err != nil {
		t.Fatal(err)
	}
	if total != n || distinct != n || bodies != n || other != 0 || noResult != 0 || noLease != 0 {
		t.Errorf("items: %d rows, %d custom_ids, %d bodies, want %d; %d in unknown states, %d done without a result, %d leased without a lease",
			total, distinct, bodies, n, other, noResult, noLease)
	}
	if completed != c.Done || failed != c.Failed {
		t.Errorf("batch counters completed=%d failed=%d, items done=%d failed=%d", completed, failed, c.Done, c.Failed)
	}
	if sc := counts(t, st, id); sc != c {
		t.Errorf("CountItems %+v, database %+v", sc, c)
	}
	return c
}

// gateExec runs items through a fakeExec, holding those from seq from on
// until open is closed (or quit, at the end of the test). A held item
// ignores its context, like a model that overruns its lease.
type gateExec struct {
	*fakeExec
	from       int
	open, quit chan struct{}
	held       atomic.Int32
}

func (g *gateExec) Execute(ctx context.Context, model string, bodies [][]byte, done func(int, Reply)) {
	eachItem(ctx, model, bodies, done, g.one)
}

func (g *gateExec) one(ctx context.Context, model string, body []byte) (int, []byte, error) {
	var in struct {
		CID string `json:"cid"`
	}
	if json.Unmarshal(body, &in) == nil && seqOf(in.CID) >= g.from {
		g.held.Add(1)
		select {
		case <-g.open:
		case <-g.quit:
		}
		g.held.Add(-1)
	}
	return g.fakeExec.one(ctx, model, body)
}

// watchStore is a jobs.Store that records the errors of the runner's
// store calls.
type watchStore struct {
	jobs.Store
	mu   sync.Mutex
	errs []error
	ops  map[string]int
}

type storeErrs struct {
	errs []error
	ops  map[string]int // errors per method
}

func (w *watchStore) note(op string, err error) {
	if err == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ops == nil {
		w.ops = map[string]int{}
	}
	w.errs = append(w.errs, err)
	w.ops[op]++
}

func (w *watchStore) stats() storeErrs {
	w.mu.Lock()
	defer w.mu.Unlock()
	ops := make(map[string]int, len(w.ops))
	for k, v := range w.ops {
		ops[k] = v
	}
	return storeErrs{errs: append([]error(nil), w.errs...), ops: ops}
}

func (w *watchStore) ActiveBatches(ctx context.Context) ([]*jobs.Batch, error) {
	bs, err := w.Store.ActiveBatches(ctx)
	w.note("ActiveBatches", err)
	return bs, err
}

func (w *watchStore) LeaseItems(ctx context.Context, batchID, owner string, n int, leaseFor time.Duration) ([]*jobs.Item, error) {
	items, err := w.Store.LeaseItems(ctx, batchID, owner, n, leaseFor)
	w.note("LeaseItems", err)
	return items, err
}

func (w *watchStore) CompleteItems(ctx context.Context, owner string, results []jobs.ItemResult) ([]jobs.ItemKey, error) {
	stale, err := w.Store.CompleteItems(ctx, owner, results)
	w.note("CompleteItems", err)
	return stale, err
}

func (w *watchStore) UpdateBatchStatus(ctx context.Context, id string, from, to jobs.Status, at time.Time) error {
	err := w.Store.UpdateBatchStatus(ctx, id, from, to, at)
	w.note("UpdateBatchStatus", err)
	return err
}

func (w *watchStore) CreateFile(ctx context.Context, f *jobs.File, content io.Reader) error {
	err := w.Store.CreateFile(ctx, f, content)
	w.note("CreateFile", err)
	return err
}

func (w *watchStore) FinishBatch(ctx context.Context, id string, from, to jobs.Status, at time.Time, out jobs.Outcome) error {
	err := w.Store.FinishBatch(ctx, id, from, to, at, out)
	w.note("FinishBatch", err)
	return err
}
