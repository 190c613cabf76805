// Package storetest is the conformance suite every jobs.Store
// implementation must pass. An implementation's test calls Run with a
// function that makes a fresh database.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"
)

// Opener opens a handle on one database with the given clock. Every call
// returns a new, independent handle on the same database, as another
// process or replica would have: a handle opened after another is closed
// sees everything that was committed, and two open handles see each
// other's writes. The opener registers the handle's Close with t.Cleanup;
// the suite may also close it earlier (Close must be idempotent).
type Opener func(t *testing.T, clk clock.Clock) jobs.Store

// Run runs the suite. fresh is called once per subtest and returns the
// opener of a new, empty database.
func Run(t *testing.T, fresh func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"Files/RoundTrip", testFileRoundTrip},
		{"Files/OwnerIsolation", testFileOwnerIsolation},
		{"Files/FailedUpload", testFileFailedUpload},
		{"Files/List", testFileList},
		{"Files/Delete", testFileDelete},
		{"Batches/Create", testBatchCreate},
		{"Batches/CreateErrors", testBatchCreateErrors},
		{"Batches/Idempotency", testBatchIdempotency},
		{"Batches/IdempotencyConcurrent", testBatchIdempotencyConcurrent},
		{"Batches/Transitions", testBatchTransitions},
		{"Batches/FinishBatch", testBatchFinish},
		{"Batches/ListAndActive", testBatchListActive},
		{"Items/Lease", testLease},
		{"Items/LeaseErrors", testLeaseErrors},
		{"Items/ConcurrentLease", testConcurrentLease},
		{"Items/ExpiredLeaseRescue", testExpiredLeaseRescue},
		{"Items/LateCompletionWithoutRescuer", testLateCompletion},
		{"Items/Retry", testRetry},
		{"Items/ReleaseLeases", testReleaseLeases},
		{"Items/CancelPending", testCancelPending},
		{"Items/ResultsOrderAndCounters", testResultsOrder},
		{"Items/CompleteErrors", testCompleteErrors},
		{"Items/Cost", testCost},
		{"Crash/ReopenMidLease", testCrashReopen},
		{"Crash/RandomIncarnations", testCrashRandom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			open := fresh(t)
			clk := clock.NewFake(Start)
			e := &env{t: t, ctx: t.Context(), clk: clk, open: open}
			e.st = open(t, clk)
			tc.fn(t, e)
		})
	}
}

// Start is the fake clock's start time in every subtest.
var Start = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

type env struct {
	t    *testing.T
	ctx  context.Context
	clk  *clock.Fake
	open Opener
	st   jobs.Store
}

// code fails the test unless err has the wanted infergate code ("" for
// nil).
func code(t *testing.T, err error, want string, what string) {
	t.Helper()
	if got := infergate.ErrorCode(err); got != want {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, got, want)
	}
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// mkFile stores a small input file for owner.
func (e *env) mkFile(owner string) *jobs.File {
	e.t.Helper()
	f := &jobs.File{Owner: owner, Purpose: jobs.PurposeBatch, Filename: "input.jsonl"}
	must(e.t, e.st.CreateFile(e.ctx, f, strings.NewReader(`{"custom_id":"x"}`+"\n")), "CreateFile")
	return f
}

// genItems yields n items with custom IDs prefix-0, prefix-1, ...
func genItems(prefix string, n int) iter.Seq2[*jobs.Item, error] {
	return func(yield func(*jobs.Item, error) bool) {
		for i := range n {
			it := &jobs.Item{CustomID: fmt.Sprintf("%s-%d", prefix, i), Body: fmt.Appendf(nil, `{"inputs":[%d]}`, i)}
			if !yield(it, nil) {
				return
			}
		}
	}
}

// mkBatch creates an in_progress batch of n items for owner.
func (e *env) mkBatch(owner string, n int) *jobs.Batch {
	e.t.Helper()
	f := e.mkFile(owner)
	b := &jobs.Batch{Owner: owner, InputFileID: f.ID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h",
		Window: 24 * time.Hour, Status: jobs.StatusInProgress}
	existed, err := e.st.CreateBatch(e.ctx, b, genItems("c", n))
	must(e.t, err, "CreateBatch")
	if existed {
		e.t.Fatal("CreateBatch: existed without idempotency key")
	}
	return b
}

func (e *env) lease(st jobs.Store, b *jobs.Batch, owner string, n int, d time.Duration) []*jobs.Item {
	e.t.Helper()
	items, err := st.LeaseItems(e.ctx, b.ID, owner, n, d)
	must(e.t, err, "LeaseItems")
	return items
}

func seqs(items []*jobs.Item) []int64 {
	var s []int64
	for _, it := range items {
		s = append(s, it.Seq)
	}
	return s
}

func span(from, to int64) []int64 {
	var s []int64
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func results(items []*jobs.Item, state jobs.ItemState, tag string) []jobs.ItemResult {
	var rs []jobs.ItemResult
	for _, it := range items {
		r := jobs.ItemResult{BatchID: it.BatchID, Seq: it.Seq, State: state}
		switch state {
		case jobs.ItemDone:
			r.StatusCode, r.Result = 200, fmt.Appendf(nil, `{"id":%q,"by":%q}`, it.CustomID, tag)
		case jobs.ItemFailed:
			r.StatusCode, r.Error = 500, "failed by "+tag
		}
		rs = append(rs, r)
	}
	return rs
}

func (e *env) complete(st jobs.Store, owner string, rs []jobs.ItemResult) {
	e.t.Helper()
	stale, err := st.CompleteItems(e.ctx, owner, rs)
	must(e.t, err, "CompleteItems")
	if len(stale) > 0 {
		e.t.Fatalf("CompleteItems(%s): unexpected stale %v", owner, stale)
	}
}

func (e *env) counts(b *jobs.Batch) jobs.ItemCounts {
	e.t.Helper()
	c, err := e.st.CountItems(e.ctx, b.ID)
	must(e.t, err, "CountItems")
	return c
}

// checkCounters checks the batch's counters against its items' states.
func (e *env) checkCounters(st jobs.Store, b *jobs.Batch) jobs.ItemCounts {
	e.t.Helper()
	c, err := st.CountItems(e.ctx, b.ID)
	must(e.t, err, "CountItems")
	got, err := st.GetBatch(e.ctx, b.Owner, b.ID)
	must(e.t, err, "GetBatch")
	if got.Total != c.Total() || got.Completed != c.Done || got.Failed != c.Failed {
		e.t.Fatalf("batch counters total=%d completed=%d failed=%d, items %+v", got.Total, got.Completed, got.Failed, c)
	}
	return c
}

// closeTo reports whether got is want up to a relative 1e-12 (exactly,
// for 0): stores may add costs in another order.
func closeTo(got, want float64) bool {
	if want == 0 {
		return got == 0
	}
	return math.Abs(got-want) <= 1e-12*math.Abs(want)
}

// checkCost checks the cost of b, an active batch, as GetBatch,
// ListBatches and ActiveBatches return it.
func (e *env) checkCost(st jobs.Store, b *jobs.Batch, want float64, what string) {
	e.t.Helper()
	got, err := st.GetBatch(e.ctx, b.Owner, b.ID)
	must(e.t, err, "GetBatch")
	if !closeTo(got.CostUSD, want) {
		e.t.Fatalf("%s: GetBatch cost %v, want %v", what, got.CostUSD, want)
	}
	list, _, err := st.ListBatches(e.ctx, b.Owner, "", 100)
	must(e.t, err, "ListBatches")
	active, err := st.ActiveBatches(e.ctx)
	must(e.t, err, "ActiveBatches")
	for name, bs := range map[string][]*jobs.Batch{"ListBatches": list, "ActiveBatches": active} {
		i := slices.IndexFunc(bs, func(x *jobs.Batch) bool { return x.ID == b.ID })
		if i < 0 {
			e.t.Fatalf("%s: %s did not return batch %s", what, name, b.ID)
		}
		if !closeTo(bs[i].CostUSD, want) {
			e.t.Fatalf("%s: %s cost %v, want %v", what, name, bs[i].CostUSD, want)
		}
	}
}

// collect returns the batch's items in state, checking Seq order.
func (e *env) collect(st jobs.Store, b *jobs.Batch, state jobs.ItemState) []*jobs.Item {
	e.t.Helper()
	var items []*jobs.Item
	err := st.ItemResults(e.ctx, b.ID, state, func(it *jobs.Item) error {
		if n := len(items); n > 0 && items[n-1].Seq >= it.Seq {
			return fmt.Errorf("ItemResults: seq %d after %d", it.Seq, items[n-1].Seq)
		}
		if it.State != state || it.BatchID != b.ID {
			return fmt.Errorf("ItemResults(%s): item %d is %s of %s", state, it.Seq, it.State, it.BatchID)
		}
		items = append(items, it)
		return nil
	})
	must(e.t, err, "ItemResults")
	return items
}

// checkExactlyOnce checks that every custom_id of a batch made by mkBatch
// appears exactly once among its done and failed items.
func (e *env) checkExactlyOnce(st jobs.Store, b *jobs.Batch) {
	e.t.Helper()
	c := e.checkCounters(st, b)
	if c.Runnable() != 0 {
		e.t.Fatalf("items still runnable: %+v", c)
	}
	seen := map[string]int{}
	for _, state := range []jobs.ItemState{jobs.ItemDone, jobs.ItemFailed} {
		for _, it := range e.collect(st, b, state) {
			seen[it.CustomID]++
		}
	}
	if len(seen) != b.Total {
		e.t.Fatalf("%d distinct custom_ids in done+failed, want %d", len(seen), b.Total)
	}
	for i := range b.Total {
		id := fmt.Sprintf("c-%d", i)
		if seen[id] != 1 {
			e.t.Fatalf("custom_id %s appears %d times", id, seen[id])
		}
	}
}

// ---- Files ----

// onlyReader hides any WriterTo/ReaderFrom so that copies go through Read
// with a small buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func testFileRoundTrip(t *testing.T, e *env) {
	for _, size := range []int64{0, 1, 1<<20 - 1, 1 << 20, 5<<19 + 7} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			h := sha256.New()
			src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{byte(size)}), size), h)
			f := &jobs.File{Owner: "alice", Purpose: jobs.PurposeBatch, Filename: "in.jsonl"}
			must(t, e.st.CreateFile(e.ctx, f, onlyReader{src}), "CreateFile")
			if !strings.HasPrefix(f.ID, "file-") || f.Bytes != size || !f.CreatedAt.Equal(e.clk.Now()) {
				t.Fatalf("created %+v, want file- ID, %d bytes, created now", f, size)
			}
			got, err := e.st.GetFile(e.ctx, "alice", f.ID)
			must(t, err, "GetFile")
			if got.ID != f.ID || got.Owner != "alice" || got.Purpose != jobs.PurposeBatch || got.Filename != "in.jsonl" ||
				got.Bytes != size || !got.CreatedAt.Equal(f.CreatedAt) {
				t.Fatalf("GetFile = %+v, want %+v", got, f)
			}
			rc, err := e.st.OpenFileContent(e.ctx, "alice", f.ID)
			must(t, err, "OpenFileContent")
			h2 := sha256.New()
			n, err := io.CopyBuffer(h2, onlyReader{rc}, make([]byte, 777))
			must(t, err, "read content")
			must(t, rc.Close(), "close content")
			if n != size || !bytes.Equal(h.Sum(nil), h2.Sum(nil)) {
				t.Fatalf("read back %d bytes (equal=%v), want %d", n, bytes.Equal(h.Sum(nil), h2.Sum(nil)), size)
			}
		})
	}
	files, _, err := e.st.ListFiles(e.ctx, "alice", "", 100)
	must(t, err, "ListFiles")
	if len(files) != 5 {
		t.Fatalf("ListFiles: %d files, want 5", len(files))
	}
}

func testFileOwnerIsolation(t *testing.T, e *env) {
	f := e.mkFile("alice")
	_, err := e.st.GetFile(e.ctx, "bob", f.ID)
	code(t, err, infergate.ENotFound, "GetFile by another owner")
	_, err = e.st.OpenFileContent(e.ctx, "bob", f.ID)
	code(t, err, infergate.ENotFound, "OpenFileContent by another owner")
	code(t, e.st.DeleteFile(e.ctx, "bob", f.ID), infergate.ENotFound, "DeleteFile by another owner")
	files, more, err := e.st.ListFiles(e.ctx, "bob", "", 10)
	must(t, err, "ListFiles")
	if len(files) != 0 || more {
		t.Fatalf("bob lists %d files (more=%v), want none", len(files), more)
	}
	_, err = e.st.GetFile(e.ctx, "alice", "file-nope")
	code(t, err, infergate.ENotFound, "GetFile unknown")
	_, err = e.st.GetFile(e.ctx, "alice", f.ID)
	code(t, err, "", "GetFile by owner")
}

type failingReader struct {
	n   int64
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, r.err
	}
	n := int(min(int64(len(p)), r.n))
	clear(p[:n])
	r.n -= int64(n)
	return n, nil
}

func testFileFailedUpload(t *testing.T, e *env) {
	boom := errors.New("client went away")
	f := &jobs.File{Owner: "alice", Purpose: jobs.PurposeBatch, Filename: "x"}
	err := e.st.CreateFile(e.ctx, f, &failingReader{n: 3 << 19, err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("CreateFile with failing content: %v, want %v", err, boom)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if err := e.st.CreateFile(ctx, &jobs.File{Owner: "alice"}, strings.NewReader("abc")); err == nil {
		t.Fatal("CreateFile with cancelled context succeeded")
	}
	files, _, err := e.st.ListFiles(e.ctx, "alice", "", 10)
	must(t, err, "ListFiles")
	if len(files) != 0 {
		t.Fatalf("failed uploads left %d files", len(files))
	}
	if f.ID != "" {
		if _, err := e.st.GetFile(e.ctx, "alice", f.ID); infergate.ErrorCode(err) != infergate.ENotFound {
			t.Fatalf("failed upload is visible: %v", err)
		}
	}
}

func testFileList(t *testing.T, e *env) {
	var ids []string // newest first
	for range 7 {
		f := e.mkFile("alice")
		ids = append([]string{f.ID}, ids...)
		e.clk.Advance(time.Second)
	}
	e.mkFile("bob")
	e.mkFile("bob")
	tests := []struct {
		after string
		limit int
		want  []string
		more  bool
	}{
		{"", 3, ids[:3], true},
		{ids[2], 3, ids[3:6], true},
		{ids[5], 3, ids[6:], false},
		{ids[6], 3, nil, false},
		{"", 7, ids, false},
		{"", 0, ids, false}, // default limit
	}
	for _, tc := range tests {
		files, more, err := e.st.ListFiles(e.ctx, "alice", tc.after, tc.limit)
		must(t, err, "ListFiles")
		var got []string
		for _, f := range files {
			got = append(got, f.ID)
		}
		if !slices.Equal(got, tc.want) || more != tc.more {
			t.Fatalf("ListFiles(after=%s, limit=%d) = %v more=%v, want %v more=%v", tc.after, tc.limit, got, more, tc.want, tc.more)
		}
	}
	bobs, _, err := e.st.ListFiles(e.ctx, "bob", "", 10)
	must(t, err, "ListFiles bob")
	if len(bobs) != 2 {
		t.Fatalf("bob has %d files, want 2", len(bobs))
	}
	_, _, err = e.st.ListFiles(e.ctx, "alice", "file-nope", 10)
	code(t, err, infergate.EInvalid, "ListFiles after unknown")
	_, _, err = e.st.ListFiles(e.ctx, "alice", bobs[0].ID, 10)
	code(t, err, infergate.EInvalid, "ListFiles after another owner's file")
}

func testFileDelete(t *testing.T, e *env) {
	f := e.mkFile("alice")
	must(t, e.st.DeleteFile(e.ctx, "alice", f.ID), "DeleteFile")
	_, err := e.st.GetFile(e.ctx, "alice", f.ID)
	code(t, err, infergate.ENotFound, "GetFile after delete")
	_, err = e.st.OpenFileContent(e.ctx, "alice", f.ID)
	code(t, err, infergate.ENotFound, "OpenFileContent after delete")
	code(t, e.st.DeleteFile(e.ctx, "alice", f.ID), infergate.ENotFound, "DeleteFile twice")

	// A file that an active batch reads cannot be deleted.
	b := e.mkBatch("alice", 3)
	code(t, e.st.DeleteFile(e.ctx, "alice", b.InputFileID), infergate.EConflict, "DeleteFile of active input")
	must(t, e.st.UpdateBatchStatus(e.ctx, b.ID, jobs.StatusInProgress, jobs.StatusCancelling, time.Time{}), "cancel")
	code(t, e.st.DeleteFile(e.ctx, "alice", b.InputFileID), infergate.EConflict, "DeleteFile of cancelling input")
	must(t, e.st.FinishBatch(e.ctx, b.ID, jobs.StatusCancelling, jobs.StatusCancelled, time.Time{}, jobs.Outcome{}), "cancelled")
	must(t, e.st.DeleteFile(e.ctx, "alice", b.InputFileID), "DeleteFile of a terminal batch's input")

	// A reader of a file deleted meanwhile fails instead of returning
	// short content.
	big := &jobs.File{Owner: "alice"}
	must(t, e.st.CreateFile(e.ctx, big, &failingReader{n: 5 << 20, err: io.EOF}), "CreateFile big")
	rc, err := e.st.OpenFileContent(e.ctx, "alice", big.ID)
	must(t, err, "OpenFileContent")
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 10)); err != nil {
		t.Fatalf("first read: %v", err)
	}
	must(t, e.st.DeleteFile(e.ctx, "alice", big.ID), "DeleteFile while reading")
	if n, err := io.Copy(io.Discard, rc); err == nil {
		t.Fatalf("reading a deleted file returned %d more bytes and no error", n)
	}
}

// ---- Batches ----

func testBatchCreate(t *testing.T, e *env) {
	const n = 10000
	f := e.mkFile("alice")
	e.clk.Advance(time.Minute)
	md := map[string]string{"project": "p1", "run": "7"}
	b := &jobs.Batch{Owner: "alice", InputFileID: f.ID, Endpoint: "/v1/embeddings", CompletionWindow: "24h",
		Window: 24 * time.Hour, Metadata: md, RequestHash: "h1"}
	// The source yields items built on the fly; the store must not keep
	// them (it may not even see them all at once).
	yielded := 0
	src := func(yield func(*jobs.Item, error) bool) {
		for it, err := range genItems("c", n) {
			yielded++
			if !yield(it, err) {
				return
			}
		}
	}
	existed, err := e.st.CreateBatch(e.ctx, b, src)
	must(t, err, "CreateBatch")
	now := e.clk.Now()
	if existed || yielded != n || !strings.HasPrefix(b.ID, "batch_") || b.Total != n ||
		b.Status != jobs.StatusValidating || !b.CreatedAt.Equal(now) || !b.ExpiresAt.Equal(now.Add(24*time.Hour)) {
		t.Fatalf("created %+v (existed=%v, yielded %d)", b, existed, yielded)
	}
	got, err := e.st.GetBatch(e.ctx, "alice", b.ID)
	must(t, err, "GetBatch")
	if got.ID != b.ID || got.Owner != "alice" || got.InputFileID != f.ID || got.Endpoint != "/v1/embeddings" ||
		got.CompletionWindow != "24h" || got.Window != 24*time.Hour || got.Status != jobs.StatusValidating ||
		!maps.Equal(got.Metadata, md) || got.RequestHash != "h1" || got.Total != n || got.Completed != 0 || got.Failed != 0 ||
		!got.CreatedAt.Equal(now) || !got.ExpiresAt.Equal(now.Add(24*time.Hour)) || !got.InProgressAt.IsZero() ||
		got.OutputFileID != "" || len(got.Errors) != 0 {
		t.Fatalf("GetBatch = %+v", got)
	}
	_, err = e.st.GetBatch(e.ctx, "bob", b.ID)
	code(t, err, infergate.ENotFound, "GetBatch by another owner")
	if c := e.counts(b); c != (jobs.ItemCounts{Pending: n}) {
		t.Fatalf("counts %+v", c)
	}
	items := e.collect(e.st, b, jobs.ItemPending)
	if len(items) != n {
		t.Fatalf("%d pending items, want %d", len(items), n)
	}
	for i, it := range items {
		if it.Seq != int64(i) || it.CustomID != fmt.Sprintf("c-%d", i) || it.Attempts != 0 {
			t.Fatalf("item %d = %+v", i, it)
		}
	}
	// The bodies come back with a lease, once in_progress.
	must(t, e.st.UpdateBatchStatus(e.ctx, b.ID, jobs.StatusValidating, jobs.StatusInProgress, time.Time{}), "start")
	leased := e.lease(e.st, b, "r1", 2, time.Minute)
	if len(leased) != 2 || string(leased[1].Body) != `{"inputs":[1]}` || leased[1].CustomID != "c-1" {
		t.Fatalf("leased %+v", leased)
	}

	// Created in_progress, with no items, the batch records its start.
	b2 := &jobs.Batch{Owner: "alice", InputFileID: f.ID, Endpoint: "/v1/embeddings", Status: jobs.StatusInProgress}
	_, err = e.st.CreateBatch(e.ctx, b2, nil)
	must(t, err, "CreateBatch empty")
	got, err = e.st.GetBatch(e.ctx, "alice", b2.ID)
	must(t, err, "GetBatch")
	if got.Total != 0 || got.Status != jobs.StatusInProgress || !got.InProgressAt.Equal(now) || !got.ExpiresAt.IsZero() {
		t.Fatalf("empty batch %+v", got)
	}
	// Created failed, with validation errors.
	errs := []jobs.LineError{{Code: "invalid_json", Message: "line 3 is not JSON", Line: 3}}
	b3 := &jobs.Batch{Owner: "alice", InputFileID: f.ID, Endpoint: "/v1/embeddings", Status: jobs.StatusFailed, Errors: errs}
	_, err = e.st.CreateBatch(e.ctx, b3, nil)
	must(t, err, "CreateBatch failed")
	got, err = e.st.GetBatch(e.ctx, "alice", b3.ID)
	must(t, err, "GetBatch")
	if got.Status != jobs.StatusFailed || !got.FailedAt.Equal(now) || !slices.Equal(got.Errors, errs) {
		t.Fatalf("failed batch %+v", got)
	}
}

func testBatchCreateErrors(t *testing.T, e *env) {
	f := e.mkFile("alice")
	other := e.mkFile("bob")
	boom := errors.New("bad line")
	withSource := func(src iter.Seq2[*jobs.Item, error]) iter.Seq2[*jobs.Item, error] { return src }
	dupAt := func(n, a, b int) iter.Seq2[*jobs.Item, error] {
		return func(yield func(*jobs.Item, error) bool) {
			for i := range n {
				id := fmt.Sprintf("c-%d", i)
				if i == b {
					id = fmt.Sprintf("c-%d", a)
				}
				if !yield(&jobs.Item{CustomID: id, Body: []byte("{}")}, nil) {
					return
				}
			}
		}
	}
	tests := []struct {
		name  string
		b     jobs.Batch
		items iter.Seq2[*jobs.Item, error]
		code  string
		err   error
	}{
		{"no input file", jobs.Batch{Endpoint: "/e"}, nil, infergate.EInvalid, nil},
		{"no endpoint", jobs.Batch{InputFileID: f.ID}, nil, infergate.EInvalid, nil},
		{"unknown input file", jobs.Batch{InputFileID: "file-nope", Endpoint: "/e"}, nil, infergate.ENotFound, nil},
		{"another owner's file", jobs.Batch{InputFileID: other.ID, Endpoint: "/e"}, nil, infergate.ENotFound, nil},
		{"created completed", jobs.Batch{InputFileID: f.ID, Endpoint: "/e", Status: jobs.StatusCompleted}, nil, infergate.EInvalid, nil},
		{"empty custom_id", jobs.Batch{InputFileID: f.ID, Endpoint: "/e"}, withSource(func(yield func(*jobs.Item, error) bool) {
			yield(&jobs.Item{Body: []byte("{}")}, nil)
		}), infergate.EInvalid, nil},
		{"duplicate custom_id, close", jobs.Batch{InputFileID: f.ID, Endpoint: "/e"}, dupAt(10, 2, 3), infergate.EInvalid, nil},
		{"duplicate custom_id, far", jobs.Batch{InputFileID: f.ID, Endpoint: "/e"}, dupAt(1000, 1, 900), infergate.EInvalid, nil},
		{"source error", jobs.Batch{InputFileID: f.ID, Endpoint: "/e"}, withSource(func(yield func(*jobs.Item, error) bool) {
			for it := range genItems("c", 700) {
				if !yield(it, nil) {
					return
				}
			}
			yield(nil, boom)
		}), "", boom},
	}
	for _, tc := range tests {
		b := tc.b
		b.Owner = "alice"
		_, err := e.st.CreateBatch(e.ctx, &b, tc.items)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Fatalf("%s: error %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		code(t, err, tc.code, tc.name)
	}
	bs, _, err := e.st.ListBatches(e.ctx, "alice", "", 100)
	must(t, err, "ListBatches")
	if len(bs) != 0 {
		t.Fatalf("failed creations left %d batches", len(bs))
	}
	active, err := e.st.ActiveBatches(e.ctx)
	must(t, err, "ActiveBatches")
	if len(active) != 0 {
		t.Fatalf("failed creations left %d active batches", len(active))
	}
}

func testBatchIdempotency(t *testing.T, e *env) {
	fa, fb := e.mkFile("alice"), e.mkFile("bob")
	create := func(owner, file, key, hash string) (*jobs.Batch, bool, error) {
		b := &jobs.Batch{Owner: owner, InputFileID: file, Endpoint: "/e", IdempotencyKey: key, RequestHash: hash}
		existed, err := e.st.CreateBatch(e.ctx, b, genItems("c", 5))
		return b, existed, err
	}
	first, existed, err := create("alice", fa.ID, "k1", "h1")
	must(t, err, "first create")
	if existed {
		t.Fatal("first create: existed")
	}
	e.clk.Advance(time.Minute)
	tests := []struct {
		name               string
		owner, file, key   string
		hash               string
		code               string
		existed, sameAsOne bool
	}{
		{"same key and hash", "alice", fa.ID, "k1", "h1", "", true, true},
		{"same key, other hash", "alice", fa.ID, "k1", "h2", infergate.EConflict, false, false},
		{"other key", "alice", fa.ID, "k2", "h1", "", false, false},
		{"other owner, same key", "bob", fb.ID, "k1", "h1", "", false, false},
		{"no key", "alice", fa.ID, "", "h1", "", false, false},
		{"no key again", "alice", fa.ID, "", "h1", "", false, false},
	}
	for _, tc := range tests {
		b, existed, err := create(tc.owner, tc.file, tc.key, tc.hash)
		code(t, err, tc.code, tc.name)
		if err != nil {
			continue
		}
		if existed != tc.existed || (b.ID == first.ID) != tc.sameAsOne {
			t.Fatalf("%s: existed=%v id=%s (first %s)", tc.name, existed, b.ID, first.ID)
		}
		if tc.sameAsOne && (!b.CreatedAt.Equal(first.CreatedAt) || b.Total != 5) {
			t.Fatalf("%s: returned %+v, want the first batch %+v", tc.name, b, first)
		}
	}
	bs, _, err := e.st.ListBatches(e.ctx, "alice", "", 100)
	must(t, err, "ListBatches")
	if len(bs) != 4 {
		t.Fatalf("alice has %d batches, want 4", len(bs))
	}
	if c := e.counts(first); c.Total() != 5 {
		t.Fatalf("first batch has %d items after a replay, want 5", c.Total())
	}
}

func testBatchIdempotencyConcurrent(t *testing.T, e *env) {
	f := e.mkFile("alice")
	const n = 6
	var wg sync.WaitGroup
	ids := make([]string, n)
	existed := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			b := &jobs.Batch{Owner: "alice", InputFileID: f.ID, Endpoint: "/e", IdempotencyKey: "k", RequestHash: "h"}
			existed[i], errs[i] = e.st.CreateBatch(e.ctx, b, genItems("c", 50))
			ids[i] = b.ID
		})
	}
	wg.Wait()
	created := 0
	for i := range n {
		must(t, errs[i], "CreateBatch")
		if !existed[i] {
			created++
		}
		if ids[i] != ids[0] {
			t.Fatalf("concurrent creates with one key made batches %s and %s", ids[0], ids[i])
		}
	}
	if created != 1 {
		t.Fatalf("%d creates reported a new batch, want 1", created)
	}
}

// pathTo lists the statuses a new (validating) batch goes through to reach
// a status.
var pathTo = map[jobs.Status][]jobs.Status{
	jobs.StatusValidating: nil,
	jobs.StatusInProgress: {jobs.StatusInProgress},
	jobs.StatusFinalizing: {jobs.StatusInProgress, jobs.StatusFinalizing},
	jobs.StatusCancelling: {jobs.StatusCancelling},
	jobs.StatusFailed:     {jobs.StatusFailed},
	jobs.StatusCompleted:  {jobs.StatusInProgress, jobs.StatusFinalizing, jobs.StatusCompleted},
	jobs.StatusExpired:    {jobs.StatusInProgress, jobs.StatusExpired},
	jobs.StatusCancelled:  {jobs.StatusCancelling, jobs.StatusCancelled},
}

func testBatchTransitions(t *testing.T, e *env) {
	f := e.mkFile("alice")
	newBatchIn := func(s jobs.Status) *jobs.Batch {
		t.Helper()
		b := &jobs.Batch{Owner: "alice", InputFileID: f.ID, Endpoint: "/e"}
		_, err := e.st.CreateBatch(e.ctx, b, nil)
		must(t, err, "CreateBatch")
		from := jobs.StatusValidating
		for _, to := range pathTo[s] {
			must(t, e.st.UpdateBatchStatus(e.ctx, b.ID, from, to, time.Time{}), fmt.Sprintf("%s -> %s", from, to))
			from = to
		}
		return b
	}
	for _, from := range jobs.Statuses {
		b := newBatchIn(from)
		for _, to := range jobs.Statuses {
			at := e.clk.Now().Add(time.Hour)
			if !jobs.CanTransition(from, to) {
				code(t, e.st.UpdateBatchStatus(e.ctx, b.ID, from, to, at), infergate.EInvalid,
					fmt.Sprintf("illegal %s -> %s", from, to))
				continue
			}
			// The right "from" wins once; a second move from the same
			// status loses.
			b := newBatchIn(from)
			must(t, e.st.UpdateBatchStatus(e.ctx, b.ID, from, to, at), fmt.Sprintf("%s -> %s", from, to))
			code(t, e.st.UpdateBatchStatus(e.ctx, b.ID, from, to, at), infergate.EConflict,
				fmt.Sprintf("repeated %s -> %s", from, to))
			got, err := e.st.GetBatch(e.ctx, "alice", b.ID)
			must(t, err, "GetBatch")
			if got.Status != to || !got.StatusTime(to).Equal(at) {
				t.Fatalf("%s -> %s: batch is %s, entered at %v, want %v", from, to, got.Status, *got.StatusTime(to), at)
			}
		}
		got, err := e.st.GetBatch(e.ctx, "alice", b.ID)
		must(t, err, "GetBatch")
		if got.Status != from {
			t.Fatalf("illegal transitions moved a %s batch to %s", from, got.Status)
		}
	}
	// A CAS from a status the batch is not in fails.
	b := newBatchIn(jobs.StatusInProgress)
	code(t, e.st.UpdateBatchStatus(e.ctx, b.ID, jobs.StatusValidating, jobs.StatusCancelling, time.Time{}),
		infergate.EConflict, "stale from")
	code(t, e.st.UpdateBatchStatus(e.ctx, "batch_nope", jobs.StatusValidating, jobs.StatusInProgress, time.Time{}),
		infergate.ENotFound, "unknown batch")
	// A zero time means the store's clock.
	e.clk.Advance(time.Minute)
	must(t, e.st.UpdateBatchStatus(e.ctx, b.ID, jobs.StatusInProgress, jobs.StatusCancelling, time.Time{}), "cancel")
	got, err := e.st.GetBatch(e.ctx, "alice", b.ID)
	must(t, err, "GetBatch")
	if !got.CancellingAt.Equal(e.clk.Now()) {
		t.Fatalf("cancelling_at %v, want %v", got.CancellingAt, e.clk.Now())
	}
}

func testBatchFinish(t *testing.T, e *env) {
	b := e.mkBatch("alice", 2)
	code(t, e.st.FinishBatch(e.ctx, b.ID, jobs.StatusInProgress, jobs.StatusFinalizing, time.Time{}, jobs.Outcome{}),
		infergate.EInvalid, "FinishBatch to a non-terminal status")
	must(t, e.st.UpdateBatchStatus(e.ctx, b.ID, jobs.StatusInProgress, jobs.StatusFinalizing, time.Time{}), "finalizing")
	code(t, e.st.FinishBatch(e.ctx, b.ID, jobs.StatusInProgress, jobs.StatusExpired, time.Time{}, jobs.Outcome{OutputFileID: "file-x"}),
		infergate.EConflict, "FinishBatch from a stale status")
	e.clk.Advance(time.Second)
	out := jobs.Outcome{OutputFileID: "file-out", ErrorFileID: "file-err",
		Errors: []jobs.LineError{{Code: "c1", Message: "m1"}, {Code: "c2", Message: "m2", Param: "body", Line: 9}}}
	must(t, e.st.FinishBatch(e.ctx, b.ID, jobs.StatusFinalizing, jobs.StatusCompleted, time.Time{}, out), "FinishBatch")
	got, err := e.st.GetBatch(e.ctx, "alice", b.ID)
	must(t, err, "GetBatch")
	if got.Status != jobs.StatusCompleted || got.OutputFileID != "file-out" || got.ErrorFileID != "file-err" ||
		!slices.Equal(got.Errors, out.Errors) || !got.CompletedAt.Equal(e.clk.Now()) {
		t.Fatalf("finished batch %+v", got)
	}
	// Errors are appended; empty file IDs leave nothing set.
	f := e.mkFile("alice")
	b2 := &jobs.Batch{Owner: "alice", InputFileID: f.ID, Endpoint: "/e", Errors: []jobs.LineError{{Code: "a", Message: "first"}}}
	_, err = e.st.CreateBatch(e.ctx, b2, nil)
	must(t, err, "CreateBatch")
	must(t, e.st.FinishBatch(e.ctx, b2.ID, jobs.StatusValidating, jobs.StatusFailed, time.Time{},
		jobs.Outcome{Errors: []jobs.LineError{{Code: "b", Message: "second", Line: 2}}}), "FinishBatch failed")
	got, err = e.st.GetBatch(e.ctx, "alice", b2.ID)
	must(t, err, "GetBatch")
	if got.Status != jobs.StatusFailed || len(got.Errors) != 2 || got.Errors[0].Code != "a" || got.Errors[1].Line != 2 ||
		got.OutputFileID != "" || got.ErrorFileID != "" {
		t.Fatalf("failed batch %+v", got)
	}
}

func testBatchListActive(t *testing.T, e *env) {
	f := e.mkFile("alice")
	var ids []string // newest first
	for i := range 5 {
		b := &jobs.Batch{Owner: "alice", InputFileID: f.ID, Endpoint: "/e"}
		if i%2 == 1 {
			b.Status = jobs.StatusInProgress
		}
		_, err := e.st.CreateBatch(e.ctx, b, nil)
		must(t, err, "CreateBatch")
		ids = append([]string{b.ID}, ids...)
		e.clk.Advance(time.Second)
	}
	bob := e.mkBatch("bob", 1)
	for _, tc := range []struct {
		after string
		limit int
		want  []string
		more  bool
	}{
		{"", 2, ids[:2], true},
		{ids[1], 2, ids[2:4], true},
		{ids[3], 2, ids[4:], false},
		{"", 100, ids, false},
	} {
		bs, more, err := e.st.ListBatches(e.ctx, "alice", tc.after, tc.limit)
		must(t, err, "ListBatches")
		var got []string
		for _, b := range bs {
			got = append(got, b.ID)
		}
		if !slices.Equal(got, tc.want) || more != tc.more {
			t.Fatalf("ListBatches(after=%s, limit=%d) = %v more=%v, want %v more=%v", tc.after, tc.limit, got, more, tc.want, tc.more)
		}
	}
	_, _, err := e.st.ListBatches(e.ctx, "alice", bob.ID, 10)
	code(t, err, infergate.EInvalid, "ListBatches after another owner's batch")

	// Move some batches along; the terminal ones leave the active list.
	// ids[4] (oldest, validating) -> failed; ids[3] (in_progress) ->
	// finalizing -> completed; ids[1] (in_progress) -> cancelling.
	must(t, e.st.FinishBatch(e.ctx, ids[4], jobs.StatusValidating, jobs.StatusFailed, time.Time{}, jobs.Outcome{}), "fail")
	must(t, e.st.UpdateBatchStatus(e.ctx, ids[3], jobs.StatusInProgress, jobs.StatusFinalizing, time.Time{}), "finalize")
	must(t, e.st.FinishBatch(e.ctx, ids[3], jobs.StatusFinalizing, jobs.StatusCompleted, time.Time{}, jobs.Outcome{}), "complete")
	must(t, e.st.UpdateBatchStatus(e.ctx, ids[1], jobs.StatusInProgress, jobs.StatusCancelling, time.Time{}), "cancel")
	active, err := e.st.ActiveBatches(e.ctx)
	must(t, err, "ActiveBatches")
	var got []string
	for _, b := range active {
		if !b.Status.Active() {
			t.Fatalf("ActiveBatches returned a %s batch", b.Status)
		}
		got = append(got, b.ID)
	}
	want := []string{ids[2], ids[1], ids[0], bob.ID} // oldest first
	if !slices.Equal(got, want) {
		t.Fatalf("ActiveBatches = %v, want %v", got, want)
	}
}

// ---- Items ----

func testLease(t *testing.T, e *env) {
	b := e.mkBatch("alice", 10)
	a := e.lease(e.st, b, "r1", 4, time.Minute)
	if !slices.Equal(seqs(a), span(0, 4)) {
		t.Fatalf("r1 leased %v, want 0..3", seqs(a))
	}
	for _, it := range a {
		if it.BatchID != b.ID || it.State != jobs.ItemLeased || it.Attempts != 1 || it.LeaseOwner != "r1" ||
			!it.LeaseUntil.Equal(e.clk.Now().Add(time.Minute)) || it.CustomID != fmt.Sprintf("c-%d", it.Seq) ||
			string(it.Body) != fmt.Sprintf(`{"inputs":[%d]}`, it.Seq) {
			t.Fatalf("leased item %+v", it)
		}
	}
	bb := e.lease(e.st, b, "r2", 100, time.Minute)
	if !slices.Equal(seqs(bb), span(4, 10)) {
		t.Fatalf("r2 leased %v, want 4..9", seqs(bb))
	}
	if more := e.lease(e.st, b, "r3", 5, time.Minute); len(more) != 0 {
		t.Fatalf("r3 leased %v from a fully leased batch", seqs(more))
	}
	if c := e.counts(b); c != (jobs.ItemCounts{Leased: 10}) {
		t.Fatalf("counts %+v", c)
	}
	e.complete(e.st, "r1", results(a[:3], jobs.ItemDone, "r1"))
	e.complete(e.st, "r1", results(a[3:], jobs.ItemFailed, "r1"))
	e.complete(e.st, "r2", results(bb, jobs.ItemDone, "r2"))
	if c := e.checkCounters(e.st, b); c != (jobs.ItemCounts{Done: 9, Failed: 1}) {
		t.Fatalf("counts %+v", c)
	}
	done := e.collect(e.st, b, jobs.ItemDone)
	if len(done) != 9 || done[0].StatusCode != 200 || string(done[0].Result) != `{"id":"c-0","by":"r1"}` ||
		done[0].LeaseOwner != "r1" || done[8].Seq != 9 {
		t.Fatalf("done items %+v", done)
	}
	failed := e.collect(e.st, b, jobs.ItemFailed)
	if len(failed) != 1 || failed[0].Seq != 3 || failed[0].Error != "failed by r1" || failed[0].StatusCode != 500 {
		t.Fatalf("failed items %+v", failed)
	}
	if more := e.lease(e.st, b, "r3", 5, time.Hour); len(more) != 0 {
		t.Fatalf("leased %v from a finished batch", seqs(more))
	}
	e.checkExactlyOnce(e.st, b)
}

func testLeaseErrors(t *testing.T, e *env) {
	b := e.mkBatch("alice", 3)
	for _, tc := range []struct {
		name  string
		batch string
		owner string
		n     int
		d     time.Duration
		code  string
	}{
		{"unknown batch", "batch_nope", "r", 1, time.Minute, infergate.ENotFound},
		{"n=0", b.ID, "r", 0, time.Minute, infergate.EInvalid},
		{"no duration", b.ID, "r", 1, 0, infergate.EInvalid},
		{"no owner", b.ID, "", 1, time.Minute, infergate.EInvalid},
	} {
		_, err := e.st.LeaseItems(e.ctx, tc.batch, tc.owner, tc.n, tc.d)
		code(t, err, tc.code, tc.name)
	}
	// Only an in_progress batch hands out work.
	must(t, e.st.UpdateBatchStatus(e.ctx, b.ID, jobs.StatusInProgress, jobs.StatusCancelling, time.Time{}), "cancel")
	_, err := e.st.LeaseItems(e.ctx, b.ID, "r", 1, time.Minute)
	code(t, err, infergate.EConflict, "lease from a cancelling batch")
	f := e.mkFile("alice")
	v := &jobs.Batch{Owner: "alice", InputFileID: f.ID, Endpoint: "/e"}
	_, err = e.st.CreateBatch(e.ctx, v, genItems("c", 2))
	must(t, err, "CreateBatch")
	_, err = e.st.LeaseItems(e.ctx, v.ID, "r", 1, time.Minute)
	code(t, err, infergate.EConflict, "lease from a validating batch")
}

func testConcurrentLease(t *testing.T, e *env) {
	const n = 1500
	b := e.mkBatch("alice", n)
	// Two handles on one database act as two replicas; each runs several
	// workers that lease and complete until nothing is left.
	replicas := []jobs.Store{e.st, e.open(t, e.clk)}
	type grant struct {
		owner string
		seq   int64
	}
	var mu sync.Mutex
	var grants []grant
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for r, st := range replicas {
		for w := range 3 {
			owner := fmt.Sprintf("replica%d-worker%d", r, w)
			wg.Go(func() {
				for {
					items, err := st.LeaseItems(e.ctx, b.ID, owner, 1+w*4, time.Hour)
					if err != nil {
						errc <- err
						return
					}
					if len(items) == 0 {
						return
					}
					mu.Lock()
					for _, it := range items {
						grants = append(grants, grant{owner, it.Seq})
					}
					mu.Unlock()
					stale, err := st.CompleteItems(e.ctx, owner, results(items, jobs.ItemDone, owner))
					if err != nil || len(stale) > 0 {
						errc <- fmt.Errorf("CompleteItems: stale %v, err %v", stale, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	by := map[int64]string{}
	for _, g := range grants {
		if prev, ok := by[g.seq]; ok {
			t.Fatalf("item %d leased to %s and %s", g.seq, prev, g.owner)
		}
		by[g.seq] = g.owner
	}
	if len(by) != n {
		t.Fatalf("%d items leased, want %d", len(by), n)
	}
	owners := map[string]bool{}
	for _, o := range by {
		owners[o] = true
	}
	if len(owners) < 2 {
		t.Logf("only %d worker got work", len(owners))
	}
	for _, it := range e.collect(e.st, b, jobs.ItemDone) {
		if it.Attempts != 1 || !bytes.Contains(it.Result, []byte(by[it.Seq])) {
			t.Fatalf("item %d: attempts %d, result %s, leased to %s", it.Seq, it.Attempts, it.Result, by[it.Seq])
		}
	}
	e.checkExactlyOnce(e.st, b)
}

func testExpiredLeaseRescue(t *testing.T, e *env) {
	b := e.mkBatch("alice", 5)
	a := e.lease(e.st, b, "r1", 3, time.Minute)
	e.clk.Advance(59 * time.Second)
	if got := e.lease(e.st, b, "r2", 10, time.Minute); !slices.Equal(seqs(got), span(3, 5)) {
		t.Fatalf("before expiry r2 leased %v, want 3, 4", seqs(got))
	}
	e.clk.Advance(time.Second) // r1's lease ends now
	rescued := e.lease(e.st, b, "r2", 10, time.Minute)
	if !slices.Equal(seqs(rescued), span(0, 3)) {
		t.Fatalf("after expiry r2 leased %v, want 0..2", seqs(rescued))
	}
	for _, it := range rescued {
		if it.Attempts != 2 || it.LeaseOwner != "r2" {
			t.Fatalf("rescued item %+v", it)
		}
	}
	// r1 finishes late: ignored and reported.
	stale, err := e.st.CompleteItems(e.ctx, "r1", results(a, jobs.ItemDone, "r1"))
	must(t, err, "late CompleteItems")
	if len(stale) != 3 || stale[0] != (jobs.ItemKey{BatchID: b.ID, Seq: 0}) {
		t.Fatalf("stale = %v, want r1's three items", stale)
	}
	code(t, e.st.RetryItem(e.ctx, "r1", b.ID, 0, time.Time{}, "x"), infergate.EConflict, "late RetryItem")
	if c := e.checkCounters(e.st, b); c.Done != 0 {
		t.Fatalf("a stale completion was counted: %+v", c)
	}
	e.complete(e.st, "r2", results(rescued, jobs.ItemDone, "r2"))
	rest := e.collect(e.st, b, jobs.ItemLeased)
	var restItems []*jobs.Item
	for _, it := range rest {
		restItems = append(restItems, &jobs.Item{BatchID: b.ID, Seq: it.Seq, CustomID: it.CustomID})
	}
	e.complete(e.st, "r2", results(restItems, jobs.ItemFailed, "r2"))
	for _, it := range e.collect(e.st, b, jobs.ItemDone) {
		if !bytes.Contains(it.Result, []byte("r2")) {
			t.Fatalf("item %d has result %s, want r2's", it.Seq, it.Result)
		}
	}
	e.checkExactlyOnce(e.st, b)
}

func testLateCompletion(t *testing.T, e *env) {
	b := e.mkBatch("alice", 2)
	a := e.lease(e.st, b, "r1", 2, time.Minute)
	e.clk.Advance(time.Hour)
	// Nobody took the items over, so r1's late results still count.
	e.complete(e.st, "r1", results(a, jobs.ItemDone, "r1"))
	if c := e.checkCounters(e.st, b); c.Done != 2 {
		t.Fatalf("counts %+v", c)
	}
	if got := e.lease(e.st, b, "r2", 2, time.Minute); len(got) != 0 {
		t.Fatalf("done items leased again: %v", seqs(got))
	}
	// A completion repeated by the same owner is stale the second time.
	stale, err := e.st.CompleteItems(e.ctx, "r1", results(a, jobs.ItemFailed, "r1"))
	must(t, err, "repeated CompleteItems")
	if len(stale) != 2 {
		t.Fatalf("repeated completion: stale %v, want both", stale)
	}
	e.checkExactlyOnce(e.st, b)
}

func testRetry(t *testing.T, e *env) {
	b := e.mkBatch("alice", 3)
	a := e.lease(e.st, b, "r1", 3, time.Minute)
	code(t, e.st.RetryItem(e.ctx, "r2", b.ID, 0, time.Time{}, "x"), infergate.EConflict, "RetryItem by another owner")
	code(t, e.st.RetryItem(e.ctx, "r1", "batch_nope", 0, time.Time{}, "x"), infergate.ENotFound, "RetryItem of unknown batch")
	must(t, e.st.RetryItem(e.ctx, "r1", b.ID, 0, e.clk.Now().Add(10*time.Second), "overloaded"), "RetryItem")
	code(t, e.st.RetryItem(e.ctx, "r1", b.ID, 0, time.Time{}, "x"), infergate.EConflict, "RetryItem of a pending item")
	// The retry in a CompleteItems batch, together with a final outcome.
	e.complete(e.st, "r1", []jobs.ItemResult{
		{BatchID: b.ID, Seq: 1, State: jobs.ItemPending, NextAttemptAt: e.clk.Now().Add(20 * time.Second), Error: "timeout"},
		{BatchID: b.ID, Seq: 2, State: jobs.ItemDone, StatusCode: 200, Result: []byte(`{}`)},
	})
	if c := e.checkCounters(e.st, b); c != (jobs.ItemCounts{Pending: 2, Done: 1}) {
		t.Fatalf("counts %+v", c)
	}
	pending := e.collect(e.st, b, jobs.ItemPending)
	if len(pending) != 2 || pending[0].Error != "overloaded" || !pending[0].NextAttemptAt.Equal(e.clk.Now().Add(10*time.Second)) ||
		pending[0].Attempts != 1 {
		t.Fatalf("pending after retry %+v", pending[0])
	}
	if got := e.lease(e.st, b, "r2", 10, time.Minute); len(got) != 0 {
		t.Fatalf("items leased before their next attempt: %v", seqs(got))
	}
	e.clk.Advance(10 * time.Second)
	got := e.lease(e.st, b, "r2", 10, time.Minute)
	if !slices.Equal(seqs(got), []int64{0}) || got[0].Attempts != 2 || got[0].Error != "overloaded" {
		t.Fatalf("at +10s leased %+v, want item 0 on its second attempt", got)
	}
	e.clk.Advance(10 * time.Second)
	got2 := e.lease(e.st, b, "r2", 10, time.Minute)
	if !slices.Equal(seqs(got2), []int64{1}) || got2[0].Attempts != 2 {
		t.Fatalf("at +20s leased %v, want item 1", seqs(got2))
	}
	e.complete(e.st, "r2", results(append(got, got2...), jobs.ItemDone, "r2"))
	_ = a
	e.checkExactlyOnce(e.st, b)
}

func testReleaseLeases(t *testing.T, e *env) {
	b := e.mkBatch("alice", 8)
	other := e.mkBatch("alice", 2)
	a := e.lease(e.st, b, "r1", 5, time.Hour)
	a2 := e.lease(e.st, other, "r1", 1, time.Hour)
	bb := e.lease(e.st, b, "r2", 2, time.Hour)
	n, err := e.st.ReleaseLeases(e.ctx, "r1")
	must(t, err, "ReleaseLeases")
	if n != 6 {
		t.Fatalf("released %d, want 6", n)
	}
	if c := e.counts(b); c != (jobs.ItemCounts{Pending: 6, Leased: 2}) {
		t.Fatalf("counts %+v", c)
	}
	// r1's results after the release are stale; the items go to the next
	// leaser at once and without an extra attempt.
	stale, err := e.st.CompleteItems(e.ctx, "r1", results(append(a, a2...), jobs.ItemDone, "r1"))
	must(t, err, "CompleteItems after release")
	if len(stale) != 6 {
		t.Fatalf("stale %v, want all 6", stale)
	}
	got := e.lease(e.st, b, "r3", 10, time.Minute)
	if !slices.Equal(seqs(got), []int64{0, 1, 2, 3, 4, 7}) {
		t.Fatalf("r3 leased %v", seqs(got))
	}
	for _, it := range got {
		if it.Attempts != 1 {
			t.Fatalf("item %d has %d attempts after a release, want 1", it.Seq, it.Attempts)
		}
	}
	if n, err := e.st.ReleaseLeases(e.ctx, "nobody"); err != nil || n != 0 {
		t.Fatalf("ReleaseLeases(nobody) = %d, %v", n, err)
	}
	e.complete(e.st, "r3", results(got, jobs.ItemDone, "r3"))
	e.complete(e.st, "r2", results(bb, jobs.ItemDone, "r2"))
	e.checkExactlyOnce(e.st, b)
}

func testCancelPending(t *testing.T, e *env) {
	b := e.mkBatch("alice", 10)
	live := e.lease(e.st, b, "r1", 3, time.Hour)
	dead := e.lease(e.st, b, "r2", 2, time.Minute)
	must(t, e.st.RetryItem(e.ctx, "r2", b.ID, dead[1].Seq, e.clk.Now().Add(time.Hour), "backoff"), "RetryItem")
	e.clk.Advance(2 * time.Minute) // r2's remaining lease has expired
	must(t, e.st.UpdateBatchStatus(e.ctx, b.ID, jobs.StatusInProgress, jobs.StatusCancelling, time.Time{}), "cancel")
	n, err := e.st.CancelPending(e.ctx, b.ID, jobs.ReasonCancelled)
	must(t, err, "CancelPending")
	// 5 never leased, 1 backed off, 1 with an expired lease.
	if n != 7 {
		t.Fatalf("cancelled %d, want 7", n)
	}
	if c := e.checkCounters(e.st, b); c != (jobs.ItemCounts{Leased: 3, Failed: 7}) {
		t.Fatalf("counts %+v", c)
	}
	for _, it := range e.collect(e.st, b, jobs.ItemFailed) {
		if it.Error != jobs.ReasonCancelled {
			t.Fatalf("cancelled item %d has error %q", it.Seq, it.Error)
		}
	}
	// The dead owner's late result is stale; the live owner's counts.
	stale, err := e.st.CompleteItems(e.ctx, "r2", results(dead[:1], jobs.ItemDone, "r2"))
	must(t, err, "CompleteItems")
	if len(stale) != 1 {
		t.Fatalf("stale %v, want r2's item", stale)
	}
	e.complete(e.st, "r1", results(live, jobs.ItemDone, "r1"))
	if n, err := e.st.CancelPending(e.ctx, b.ID, jobs.ReasonCancelled); err != nil || n != 0 {
		t.Fatalf("second CancelPending = %d, %v", n, err)
	}
	_, err = e.st.CancelPending(e.ctx, "batch_nope", jobs.ReasonCancelled)
	code(t, err, infergate.ENotFound, "CancelPending of unknown batch")
	e.checkExactlyOnce(e.st, b)
	if c := e.counts(b); c != (jobs.ItemCounts{Done: 3, Failed: 7}) {
		t.Fatalf("final counts %+v", c)
	}
}

func testResultsOrder(t *testing.T, e *env) {
	const n = 600 // more than a page in most implementations
	b := e.mkBatch("alice", n)
	var all []*jobs.Item
	for {
		items := e.lease(e.st, b, "r1", 64, time.Hour)
		if len(items) == 0 {
			break
		}
		all = append(all, items...)
	}
	// Complete in a scrambled order, every seventh failed.
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for chunk := range slices.Chunk(all, 50) {
		var rs []jobs.ItemResult
		for _, it := range chunk {
			state := jobs.ItemDone
			if it.Seq%7 == 0 {
				state = jobs.ItemFailed
			}
			rs = append(rs, results([]*jobs.Item{it}, state, "r1")...)
		}
		e.complete(e.st, "r1", rs)
		e.checkCounters(e.st, b)
	}
	done := e.collect(e.st, b, jobs.ItemDone)
	failed := e.collect(e.st, b, jobs.ItemFailed)
	wantFailed := (n + 6) / 7
	if len(failed) != wantFailed || len(done) != n-wantFailed {
		t.Fatalf("%d done, %d failed, want %d, %d", len(done), len(failed), n-wantFailed, wantFailed)
	}
	for _, it := range done {
		if it.Body != nil {
			t.Fatal("ItemResults returned a body")
		}
		if string(it.Result) != fmt.Sprintf(`{"id":"c-%d","by":"r1"}`, it.Seq) || it.CustomID != fmt.Sprintf("c-%d", it.Seq) {
			t.Fatalf("item %d: custom_id %s result %s", it.Seq, it.CustomID, it.Result)
		}
	}
	// fn's error stops the walk and comes back.
	stop := errors.New("stop")
	calls := 0
	err := e.st.ItemResults(e.ctx, b.ID, jobs.ItemDone, func(*jobs.Item) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Fatalf("ItemResults with a failing fn: %v after %d calls", err, calls)
	}
	code(t, e.st.ItemResults(e.ctx, "batch_nope", jobs.ItemDone, func(*jobs.Item) error { return nil }),
		infergate.ENotFound, "ItemResults of unknown batch")
	code(t, e.st.ItemResults(e.ctx, b.ID, "bogus", func(*jobs.Item) error { return nil }),
		infergate.EInvalid, "ItemResults of a bad state")
	_, err = e.st.CountItems(e.ctx, "batch_nope")
	code(t, err, infergate.ENotFound, "CountItems of unknown batch")
	e.checkExactlyOnce(e.st, b)
}

func testCompleteErrors(t *testing.T, e *env) {
	b := e.mkBatch("alice", 2)
	items := e.lease(e.st, b, "r1", 2, time.Minute)
	_, err := e.st.CompleteItems(e.ctx, "r1", []jobs.ItemResult{{BatchID: b.ID, Seq: 0, State: jobs.ItemLeased}})
	code(t, err, infergate.EInvalid, "complete as leased")
	_, err = e.st.CompleteItems(e.ctx, "r1", []jobs.ItemResult{{BatchID: "batch_nope", Seq: 0, State: jobs.ItemDone}})
	code(t, err, infergate.ENotFound, "complete in unknown batch")
	// A failing call changes nothing, even for its valid results.
	_, err = e.st.CompleteItems(e.ctx, "r1", append(results(items[:1], jobs.ItemDone, "r1"),
		jobs.ItemResult{BatchID: "batch_nope", Seq: 0, State: jobs.ItemDone}))
	code(t, err, infergate.ENotFound, "mixed complete")
	if c := e.checkCounters(e.st, b); c != (jobs.ItemCounts{Leased: 2}) {
		t.Fatalf("a failed CompleteItems changed items: %+v", c)
	}
	stale, err := e.st.CompleteItems(e.ctx, "r1", nil)
	if err != nil || len(stale) != 0 {
		t.Fatalf("empty CompleteItems = %v, %v", stale, err)
	}
	stale, err = e.st.CompleteItems(e.ctx, "r1", []jobs.ItemResult{{BatchID: b.ID, Seq: 99, State: jobs.ItemDone}})
	if err != nil || len(stale) != 1 {
		t.Fatalf("completing a missing item = %v, %v; want it stale", stale, err)
	}
	e.complete(e.st, "r1", results(items, jobs.ItemDone, "r1"))
	e.checkExactlyOnce(e.st, b)
}

// testCost checks that every applied outcome's cost, and only those, adds
// to its batch's cost, in the same call.
func testCost(t *testing.T, e *env) {
	b := e.mkBatch("alice", 6)
	other := e.mkBatch("alice", 2)
	if b.CostUSD != 0 {
		t.Fatalf("CreateBatch returned cost %v, want 0", b.CostUSD)
	}
	e.checkCost(e.st, b, 0, "new batch")
	a := e.lease(e.st, b, "r1", 4, time.Minute)     // 0..3
	bb := e.lease(e.st, b, "r2", 2, time.Minute)    // 4, 5
	o := e.lease(e.st, other, "r1", 2, time.Minute) // other's 0, 1
	res := func(it *jobs.Item, state jobs.ItemState, cost float64) jobs.ItemResult {
		r := results([]*jobs.Item{it}, state, "cost")[0]
		if state == jobs.ItemPending {
			r.NextAttemptAt, r.Error = e.clk.Now(), "retry"
		}
		r.CostUSD = cost
		return r
	}
	key := func(it *jobs.Item) jobs.ItemKey { return jobs.ItemKey{BatchID: it.BatchID, Seq: it.Seq} }
	var want, wantOther float64
	for _, step := range []struct {
		name          string
		owner         string
		rs            []jobs.ItemResult
		stale         []jobs.ItemKey
		add, addOther float64
	}{
		{"done, failed and retry", "r1", []jobs.ItemResult{
			res(a[0], jobs.ItemDone, 0.1), res(a[1], jobs.ItemFailed, 0.2), res(a[2], jobs.ItemPending, 0.3),
			res(o[0], jobs.ItemDone, 0.05)}, nil, 0.1 + 0.2 + 0.3, 0.05},
		{"stale: leased by another owner", "r1", []jobs.ItemResult{res(bb[0], jobs.ItemDone, 100)},
			[]jobs.ItemKey{key(bb[0])}, 0, 0},
		{"stale: already completed", "r1", []jobs.ItemResult{
			res(a[0], jobs.ItemDone, 100), res(a[3], jobs.ItemDone, 1.5e-7), res(a[1], jobs.ItemPending, 100)},
			[]jobs.ItemKey{key(a[0]), key(a[1])}, 1.5e-7, 0},
		{"only retries", "r2", []jobs.ItemResult{
			res(bb[0], jobs.ItemPending, 0.0625), res(bb[1], jobs.ItemPending, 1.0/3)}, nil, 0.0625 + 1.0/3, 0},
		{"no cost", "r1", []jobs.ItemResult{res(o[1], jobs.ItemDone, 0)}, nil, 0, 0},
	} {
		stale, err := e.st.CompleteItems(e.ctx, step.owner, step.rs)
		must(t, err, step.name)
		if !slices.Equal(stale, step.stale) {
			t.Fatalf("%s: stale %v, want %v", step.name, stale, step.stale)
		}
		want += step.add
		wantOther += step.addOther
		e.checkCost(e.st, b, want, step.name)
		e.checkCost(e.st, other, wantOther, step.name)
		e.checkCounters(e.st, b)
	}

	// A cost that is not a finite, non-negative number is refused, and
	// the call changes nothing.
	again := e.lease(e.st, b, "r3", 10, time.Minute) // the retried 2, 4, 5
	if !slices.Equal(seqs(again), []int64{2, 4, 5}) {
		t.Fatalf("r3 leased %v, want 2, 4, 5", seqs(again))
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -0.5} {
		_, err := e.st.CompleteItems(e.ctx, "r3", []jobs.ItemResult{
			res(again[0], jobs.ItemDone, 1), res(again[1], jobs.ItemDone, bad)})
		code(t, err, infergate.EInvalid, fmt.Sprintf("complete with cost %v", bad))
	}
	if c := e.checkCounters(e.st, b); c != (jobs.ItemCounts{Leased: 3, Done: 2, Failed: 1}) {
		t.Fatalf("a refused CompleteItems changed items: %+v", c)
	}
	e.checkCost(e.st, b, want, "after refused costs")

	// Costs keep adding up over further attempts; a RetryItem costs
	// nothing.
	must(t, e.st.RetryItem(e.ctx, "r3", b.ID, 2, e.clk.Now(), "again"), "RetryItem")
	e.checkCost(e.st, b, want, "RetryItem")
	e.complete(e.st, "r3", []jobs.ItemResult{res(again[1], jobs.ItemDone, 0.01), res(again[2], jobs.ItemFailed, 0.02)})
	want += 0.01 + 0.02
	e.checkCost(e.st, b, want, "second attempts")
	last := e.lease(e.st, b, "r4", 10, time.Minute)
	if !slices.Equal(seqs(last), []int64{2}) {
		t.Fatalf("r4 leased %v, want 2", seqs(last))
	}
	e.complete(e.st, "r4", []jobs.ItemResult{res(last[0], jobs.ItemDone, 2.5e-3)})
	want += 2.5e-3
	e.checkCost(e.st, b, want, "third attempt")
	e.checkExactlyOnce(e.st, b)

	// The cost is stored: another handle sees it.
	e.checkCost(e.open(t, e.clk), b, want, "another handle")
}

// ---- Crashes ----

func testCrashReopen(t *testing.T, e *env) {
	const n = 300
	b := e.mkBatch("alice", n)
	// The first process leases 100 items, records half, and dies.
	a := e.lease(e.st, b, "proc1", 100, 5*time.Minute)
	e.complete(e.st, "proc1", results(a[:30], jobs.ItemDone, "proc1"))
	e.complete(e.st, "proc1", results(a[30:50], jobs.ItemFailed, "proc1"))
	must(t, e.st.Close(), "Close")

	st := e.open(t, e.clk)
	e.st = st
	if c := e.checkCounters(st, b); c != (jobs.ItemCounts{Pending: 200, Leased: 50, Done: 30, Failed: 20}) {
		t.Fatalf("after reopen: %+v", c)
	}
	active, err := st.ActiveBatches(e.ctx)
	must(t, err, "ActiveBatches")
	if len(active) != 1 || active[0].ID != b.ID || active[0].Total != n {
		t.Fatalf("ActiveBatches after reopen = %+v", active)
	}
	// The second process gets the never-leased items first; the dead
	// process's leases only once they expire.
	var got []int64
	for {
		items := e.lease(st, b, "proc2", 64, 5*time.Minute)
		if len(items) == 0 {
			break
		}
		got = append(got, seqs(items)...)
		e.complete(st, "proc2", results(items, jobs.ItemDone, "proc2"))
	}
	if !slices.Equal(got, span(100, n)) {
		t.Fatalf("before expiry proc2 leased %d items (%v...), want 100..%d", len(got), got[:min(len(got), 5)], n-1)
	}
	e.clk.Advance(5 * time.Minute)
	rescued := e.lease(st, b, "proc2", 100, 5*time.Minute)
	if !slices.Equal(seqs(rescued), span(50, 100)) {
		t.Fatalf("after expiry proc2 leased %v, want 50..99", seqs(rescued))
	}
	e.complete(st, "proc2", results(rescued, jobs.ItemDone, "proc2"))
	e.checkExactlyOnce(st, b)
}

func testCrashRandom(t *testing.T, e *env) {
	const n = 400
	b := e.mkBatch("alice", n)
	rng := rand.New(rand.NewPCG(7, 11))
	done := map[int64]string{}
	for inc := 0; ; inc++ {
		if inc > 200 {
			t.Fatal("no progress")
		}
		owner := fmt.Sprintf("proc%d", inc)
		var outstanding []*jobs.Item
		steps := 1 + rng.IntN(6)
		for range steps {
			items := e.lease(e.st, b, owner, 1+rng.IntN(40), time.Minute)
			outstanding = append(outstanding, items...)
			rng.Shuffle(len(outstanding), func(i, j int) { outstanding[i], outstanding[j] = outstanding[j], outstanding[i] })
			k := rng.IntN(len(outstanding) + 1)
			var rs []jobs.ItemResult
			for _, it := range outstanding[:k] {
				switch x := rng.IntN(10); {
				case x < 6:
					rs = append(rs, results([]*jobs.Item{it}, jobs.ItemDone, owner)...)
				case x < 8:
					rs = append(rs, results([]*jobs.Item{it}, jobs.ItemFailed, owner)...)
				default:
					rs = append(rs, jobs.ItemResult{BatchID: b.ID, Seq: it.Seq, State: jobs.ItemPending,
						NextAttemptAt: e.clk.Now().Add(time.Duration(rng.IntN(30)) * time.Second), Error: "retry"})
				}
			}
			stale, err := e.st.CompleteItems(e.ctx, owner, rs)
			must(t, err, "CompleteItems")
			if len(stale) > 0 {
				t.Fatalf("%s: stale %v for items it holds", owner, stale)
			}
			for _, r := range rs {
				if r.State.Terminal() {
					if prev, ok := done[r.Seq]; ok {
						t.Fatalf("item %d finished by %s and %s", r.Seq, prev, owner)
					}
					done[r.Seq] = owner
				}
			}
			outstanding = outstanding[k:]
			// Stay within this incarnation's one-minute leases.
			e.clk.Advance(time.Duration(rng.IntN(10)) * time.Second)
		}
		// Crash: sometimes gracefully (leases given back), mostly not.
		if rng.IntN(4) == 0 {
			_, err := e.st.ReleaseLeases(e.ctx, owner)
			must(t, err, "ReleaseLeases")
		}
		must(t, e.st.Close(), "Close")
		e.clk.Advance(time.Duration(rng.IntN(90)) * time.Second)
		e.st = e.open(t, e.clk)
		c := e.checkCounters(e.st, b)
		if c.Runnable() == 0 {
			break
		}
	}
	if len(done) != n {
		t.Fatalf("%d items finished, want %d", len(done), n)
	}
	e.checkExactlyOnce(e.st, b)
}
