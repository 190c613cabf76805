package runner

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"
	"github.com/infergate/infergate/internal/jobs/sqlite"
	"github.com/infergate/infergate/internal/openai"
)

const tenant = "tenant-1"

// fakeExec is a hand-written Executor. Bodies are {"cid":"<custom_id>"}.
type fakeExec struct {
	mu        sync.Mutex
	calls     map[string]int
	permanent map[string]int // custom_id -> 4xx status
	transient map[string]int // custom_id -> fail the first k attempts (-1: always)
	latency   time.Duration
	hang      func(cid string) bool // hang until ctx ends
	gate      chan struct{}         // when set, gated ids wait for it to close
	gated     func(cid string) bool
	waiting   int // calls currently blocked on hang or gate
}

func newFakeExec() *fakeExec {
	return &fakeExec{calls: map[string]int{}, permanent: map[string]int{}, transient: map[string]int{}}
}

func (f *fakeExec) Execute(ctx context.Context, model string, bodies [][]byte, done func(int, Reply)) {
	eachItem(ctx, model, bodies, done, f.one)
}

// eachItem runs every body through one on its own goroutine, as an
// executor running items independently would, and answers each as it
// finishes.
func eachItem(ctx context.Context, model string, bodies [][]byte, done func(int, Reply),
	one func(ctx context.Context, model string, body []byte) (int, []byte, error)) {
	var wg sync.WaitGroup
	for i, body := range bodies {
		wg.Go(func() {
			status, resp, err := one(ctx, model, body)
			done(i, Reply{Status: status, Body: resp, Err: err, CostUSD: 0.001})
		})
	}
	wg.Wait()
}

func (f *fakeExec) one(ctx context.Context, model string, body []byte) (int, []byte, error) {
	var in struct {
		CID string `json:"cid"`
	}
	if err := json.Unmarshal(body, &in); err != nil || model != "m" {
		return 400, []byte(`{"error":"bad request"}`), nil
	}
	f.mu.Lock()
	f.calls[in.CID]++
	n := f.calls[in.CID]
	perm, isPerm := f.permanent[in.CID]
	k := f.transient[in.CID]
	hang := f.hang != nil && f.hang(in.CID)
	gated := f.gate != nil && f.gated(in.CID)
	if hang || gated {
		f.waiting++
	}
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		f.unwait()
		return 0, nil, ctx.Err()
	}
	if gated {
		select {
		case <-f.gate:
			f.unwait()
		case <-ctx.Done():
			f.unwait()
			return 0, nil, ctx.Err()
		}
	}
	if f.latency > 0 {
		time.Sleep(f.latency)
	}
	if isPerm {
		return perm, []byte(`{"error":"bad input for ` + in.CID + `"}`), nil
	}
	if k < 0 || n <= k {
		return 0, nil, infergate.Errorf(infergate.EOverloaded, "queue full")
	}
	return 200, []byte(`{"model_name":"m","outputs":[{"name":"y","datatype":"BYTES","shape":[1],"data":["` + in.CID + `"]}]}`), nil
}

func (f *fakeExec) unwait() {
	f.mu.Lock()
	f.waiting--
	f.mu.Unlock()
}

func (f *fakeExec) Calls(cid string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[cid]
}

func (f *fakeExec) Waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting
}

func cid(i int) string { return fmt.Sprintf("c-%04d", i) }

func seqOf(c string) int {
	var i int
	fmt.Sscanf(c, "c-%d", &i)
	return i
}

func openStore(t *testing.T, clk clock.Clock) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "jobs.db"), clk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func createBatch(t *testing.T, st jobs.Store, n int, window time.Duration) *jobs.Batch {
	t.Helper()
	ctx := context.Background()
	in := &jobs.File{Purpose: jobs.PurposeBatch, Filename: "in.jsonl", Owner: tenant}
	if err := st.CreateFile(ctx, in, strings.NewReader("{}\n")); err != nil {
		t.Fatal(err)
	}
	b := &jobs.Batch{
		Owner: tenant, InputFileID: in.ID, Endpoint: "/v2/models/m/infer",
		CompletionWindow: window.String(), Window: window, Status: jobs.StatusInProgress,
	}
	items := iter.Seq2[*jobs.Item, error](func(yield func(*jobs.Item, error) bool) {
		for i := range n {
			if !yield(&jobs.Item{CustomID: cid(i), Body: []byte(`{"cid":"` + cid(i) + `"}`)}, nil) {
				return
			}
		}
	})
	if _, err := st.CreateBatch(ctx, b, items); err != nil {
		t.Fatal(err)
	}
	return b
}

func testConfig(st jobs.Store, ex Executor, owner string) Config {
	return Config{
		Store: st, Exec: ex, Owner: owner,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		LeaseBatch:   16,
		Concurrency:  32,
		LeaseFor:     time.Minute,
		RetryDelay:   5 * time.Millisecond,
		PollInterval: 10 * time.Millisecond,
		// Short, so that tests that leave items hanging end quickly.
		ShutdownGrace: 100 * time.Millisecond,
	}
}

// start runs a runner until the returned stop is called (or the test ends).
func start(t *testing.T, cfg Config) (*Runner, func()) {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// waitFor polls cond; the long limit only guards against a hung test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func getBatch(t *testing.T, st jobs.Store, id string) *jobs.Batch {
	t.Helper()
	b, err := st.GetBatch(context.Background(), tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitStatus(t *testing.T, st jobs.Store, id string, want jobs.Status) *jobs.Batch {
	t.Helper()
	var b *jobs.Batch
	waitFor(t, "batch "+string(want), func() bool {
		b = getBatch(t, st, id)
		if b.Status.Terminal() && b.Status != want {
			t.Fatalf("batch ended %s, want %s", b.Status, want)
		}
		return b.Status == want
	})
	return b
}

func counts(t *testing.T, st jobs.Store, id string) jobs.ItemCounts {
	t.Helper()
	c, err := st.CountItems(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readLines(t *testing.T, st jobs.Store, fileID string) []openai.BatchOutputLine {
	t.Helper()
	if fileID == "" {
		return nil
	}
	rc, err := st.OpenFileContent(context.Background(), tenant, fileID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var lines []openai.BatchOutputLine
	sc := bufio.NewScanner(rc)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l openai.BatchOutputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		if !strings.HasPrefix(l.ID, "batch_req_") {
			t.Errorf("line id %q", l.ID)
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// results reads both files of a finished batch, checks that every custom_id
// of the n items appears exactly once across them and that the counts
// match, and returns the lines by custom_id and which are errors.
func results(t *testing.T, st jobs.Store, b *jobs.Batch, n int) (out, errs map[string]openai.BatchOutputLine) {
	t.Helper()
	out, errs = map[string]openai.BatchOutputLine{}, map[string]openai.BatchOutputLine{}
	seen := map[string]int{}
	for _, l := range readLines(t, st, b.OutputFileID) {
		seen[l.CustomID]++
		out[l.CustomID] = l
		if l.Response == nil || l.Response.StatusCode != 200 || l.Error != nil {
			t.Errorf("output line %s: %+v", l.CustomID, l)
		} else {
			var body struct {
				Outputs []struct {
					Data []string `json:"data"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal(l.Response.Body, &body); err != nil || len(body.Outputs) != 1 || body.Outputs[0].Data[0] != l.CustomID {
				t.Errorf("output line %s: body %s", l.CustomID, l.Response.Body)
			}
			if !strings.HasPrefix(l.Response.RequestID, "req_") {
				t.Errorf("request id %q", l.Response.RequestID)
			}
		}
	}
	for _, l := range readLines(t, st, b.ErrorFileID) {
		seen[l.CustomID]++
		errs[l.CustomID] = l
	}
	for i := range n {
		if seen[cid(i)] != 1 {
			t.Errorf("%s appears %d times", cid(i), seen[cid(i)])
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct custom_ids, want %d", len(seen), n)
	}
	if b.Total != n || b.Completed != len(out) || b.Failed != len(errs) {
		t.Errorf("counts total=%d completed=%d failed=%d; files: %d output, %d error", b.Total, b.Completed, b.Failed, len(out), len(errs))
	}
	if (len(out) == 0) != (b.OutputFileID == "") || (len(errs) == 0) != (b.ErrorFileID == "") {
		t.Errorf("file ids %q %q with %d output and %d error lines", b.OutputFileID, b.ErrorFileID, len(out), len(errs))
	}
	return out, errs
}

func TestBatchCompletes(t *testing.T) {
	st := openStore(t, clock.Real{})
	b := createBatch(t, st, 500, 24*time.Hour)
	ex := newFakeExec()
	ex.latency = time.Millisecond
	start(t, testConfig(st, ex, "r1"))
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	out, errs := results(t, st, b, 500)
	if len(out) != 500 || len(errs) != 0 || b.ErrorFileID != "" {
		t.Fatalf("%d output, %d errors, error file %q", len(out), len(errs), b.ErrorFileID)
	}
	if b.FinalizingAt.IsZero() || b.CompletedAt.IsZero() {
		t.Errorf("timestamps not set: %+v", b)
	}
	f, err := st.GetFile(context.Background(), tenant, b.OutputFileID)
	if err != nil {
		t.Fatal(err)
	}
	if f.Purpose != jobs.PurposeBatchOutput || f.Filename != b.ID+"_output.jsonl" {
		t.Errorf("output file %+v", f)
	}
}

func TestPermanentFailure(t *testing.T) {
	st := openStore(t, clock.Real{})
	b := createBatch(t, st, 30, 24*time.Hour)
	ex := newFakeExec()
	ex.permanent[cid(5)] = 400
	ex.permanent[cid(17)] = 422
	start(t, testConfig(st, ex, "r1"))
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	out, errs := results(t, st, b, 30)
	if len(out) != 28 || len(errs) != 2 {
		t.Fatalf("%d output, %d errors", len(out), len(errs))
	}
	for c, status := range map[string]int{cid(5): 400, cid(17): 422} {
		l := errs[c]
		if l.Response == nil || l.Response.StatusCode != status || l.Error != nil ||
			string(l.Response.Body) != `{"error":"bad input for `+c+`"}` {
			t.Errorf("error line %s: %+v", c, l)
		}
		if ex.Calls(c) != 1 {
			t.Errorf("%s ran %d times; a 4xx is not retried", c, ex.Calls(c))
		}
	}
}

func TestTransientFailures(t *testing.T) {
	st := openStore(t, clock.Real{})
	b := createBatch(t, st, 20, 24*time.Hour)
	ex := newFakeExec()
	ex.transient[cid(3)] = 2  // succeeds at the third attempt
	ex.transient[cid(4)] = 1  // succeeds at the second
	ex.transient[cid(7)] = -1 // never succeeds
	start(t, testConfig(st, ex, "r1"))
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	out, errs := results(t, st, b, 20)
	if len(out) != 19 || len(errs) != 1 {
		t.Fatalf("%d output, %d errors", len(out), len(errs))
	}
	if _, ok := out[cid(3)]; !ok {
		t.Error("c-0003 not in the output")
	}
	if got := ex.Calls(cid(3)); got != 3 {
		t.Errorf("c-0003 ran %d times, want 3", got)
	}
	if got := ex.Calls(cid(4)); got != 2 {
		t.Errorf("c-0004 ran %d times, want 2", got)
	}
	l := errs[cid(7)]
	if l.Response != nil || l.Error == nil || l.Error.Code != infergate.EOverloaded || l.Error.Message != "queue full" {
		t.Errorf("error line: %+v %+v", l, l.Error)
	}
	if got := ex.Calls(cid(7)); got != 3 {
		t.Errorf("c-0007 ran %d times, want MaxAttempts=3", got)
	}
	// Every attempt's cost (the fake's 0.001 each), retries included, is
	// in the batch's: 17 items once, 3, 2 and 3 attempts.
	if want := 0.001 * (17 + 3 + 2 + 3); math.Abs(b.CostUSD-want) > 1e-9 {
		t.Errorf("batch cost %v, want %v", b.CostUSD, want)
	}
}

func TestCancel(t *testing.T) {
	st := openStore(t, clock.Real{})
	const n = 100
	b := createBatch(t, st, n, 24*time.Hour)
	ex := newFakeExec()
	ex.gate = make(chan struct{})
	ex.gated = func(c string) bool { return seqOf(c) >= 20 }
	cfg := testConfig(st, ex, "r1")
	cfg.LeaseBatch, cfg.Concurrency = 4, 4
	r, _ := start(t, cfg)
	waitFor(t, "20 items done and 4 waiting", func() bool {
		return counts(t, st, b.ID).Done == 20 && ex.Waiting() == 4
	})
	// What the HTTP cancel handler does.
	if err := st.UpdateBatchStatus(context.Background(), b.ID, jobs.StatusInProgress, jobs.StatusCancelling, time.Time{}); err != nil {
		t.Fatal(err)
	}
	r.Notify()
	// The in-flight items finish after the cancel and are kept.
	waitFor(t, "pending items cancelled", func() bool { return counts(t, st, b.ID).Pending == 0 })
	close(ex.gate)
	b = waitStatus(t, st, b.ID, jobs.StatusCancelled)
	out, errs := results(t, st, b, n)
	if len(out) != 24 {
		t.Errorf("%d items done, want 20 + the 4 in flight", len(out))
	}
	for c, l := range errs {
		if l.Error == nil || l.Error.Code != jobs.ReasonCancelled || l.Response != nil {
			t.Errorf("error line %s: %+v", c, l)
		}
	}
	if b.CancelledAt.IsZero() {
		t.Error("cancelled_at not set")
	}
}

func TestExpiry(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := openStore(t, clk)
	const n = 50
	b := createBatch(t, st, n, time.Hour)
	ex := newFakeExec()
	ex.hang = func(c string) bool { return seqOf(c) >= 10 }
	cfg := testConfig(st, ex, "r1")
	cfg.Clock = clk
	cfg.LeaseBatch, cfg.Concurrency = 4, 4
	cfg.LeaseFor = 2 * time.Minute
	r, _ := start(t, cfg)
	waitFor(t, "10 items done and 4 hanging", func() bool {
		return counts(t, st, b.ID).Done == 10 && ex.Waiting() == 4
	})
	clk.Advance(2 * time.Hour) // past the window, and past the leases
	r.Notify()
	b = waitStatus(t, st, b.ID, jobs.StatusExpired)
	out, errs := results(t, st, b, n)
	if len(out) != 10 || len(errs) != 40 {
		t.Errorf("%d output, %d errors", len(out), len(errs))
	}
	for c, l := range errs {
		if l.Error == nil || l.Error.Code != jobs.ReasonExpired {
			t.Errorf("error line %s: %+v", c, l)
		}
	}
	if b.ExpiredAt.IsZero() || b.FinalizingAt.IsZero() {
		t.Error("timestamps not set")
	}
}

func TestRestart(t *testing.T) {
	st := openStore(t, clock.Real{})
	const n = 500
	b := createBatch(t, st, n, 24*time.Hour)
	ex := newFakeExec()
	ex.latency = time.Millisecond
	_, stop := start(t, testConfig(st, ex, "first"))
	waitFor(t, "100 items done", func() bool { return counts(t, st, b.ID).Done >= 100 })
	stop() // graceful shutdown mid-batch
	c := counts(t, st, b.ID)
	if c.Leased != 0 || c.Runnable() == 0 {
		t.Fatalf("after shutdown: %+v (want no leases, items left)", c)
	}
	if got := getBatch(t, st, b.ID).Status; got != jobs.StatusInProgress {
		t.Fatalf("status %s after shutdown", got)
	}
	start(t, testConfig(st, ex, "second"))
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	if out, _ := results(t, st, b, n); len(out) != n {
		t.Errorf("%d done", len(out))
	}
}

func TestShutdownReleasesHungItems(t *testing.T) {
	st := openStore(t, clock.Real{})
	b := createBatch(t, st, 10, 24*time.Hour)
	ex := newFakeExec()
	ex.hang = func(string) bool { return true }
	_, stop := start(t, testConfig(st, ex, "first"))
	waitFor(t, "items hanging", func() bool { return ex.Waiting() == 10 })
	stop()
	if c := counts(t, st, b.ID); c.Pending != 10 {
		t.Fatalf("after shutdown: %+v", c)
	}
	// The released leases cost no attempt, and a new runner finishes them.
	ex2 := newFakeExec()
	start(t, testConfig(st, ex2, "second"))
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	results(t, st, b, 10)
}

func TestResumeFinalizing(t *testing.T) {
	st := openStore(t, clock.Real{})
	ctx := context.Background()
	b := createBatch(t, st, 5, 24*time.Hour)
	// A crashed runner: all items recorded, the batch left in finalizing.
	items, err := st.LeaseItems(ctx, b.ID, "crashed", 10, time.Minute)
	if err != nil || len(items) != 5 {
		t.Fatal(len(items), err)
	}
	var res []jobs.ItemResult
	for _, it := range items {
		r := jobs.ItemResult{BatchID: b.ID, Seq: it.Seq, State: jobs.ItemDone, StatusCode: 200, Result: []byte(`{"outputs":[{"data":["` + it.CustomID + `"]}]}`)}
		if it.Seq == 2 {
			r = jobs.ItemResult{BatchID: b.ID, Seq: it.Seq, State: jobs.ItemFailed, Error: "internal: boom"}
		}
		res = append(res, r)
	}
	if _, err := st.CompleteItems(ctx, "crashed", res); err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateBatchStatus(ctx, b.ID, jobs.StatusInProgress, jobs.StatusFinalizing, time.Time{}); err != nil {
		t.Fatal(err)
	}
	ex := newFakeExec()
	// The runner that moved it to finalizing gets a lease period to write
	// the files before another takes over: keep it short here.
	cfg := testConfig(st, ex, "r2")
	cfg.LeaseFor = 300 * time.Millisecond
	start(t, cfg)
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	_, errs := results(t, st, b, 5)
	if l := errs[cid(2)]; l.Error == nil || l.Error.Code != "internal" || l.Error.Message != "boom" {
		t.Errorf("error line %+v", l)
	}
	for i := range 5 {
		if ex.Calls(cid(i)) != 0 {
			t.Errorf("%s ran again", cid(i))
		}
	}
}

func TestBadEndpointFailsBatch(t *testing.T) {
	st := openStore(t, clock.Real{})
	b := createBatch(t, st, 3, 24*time.Hour)
	ex := newFakeExec()
	cfg := testConfig(st, ex, "r1")
	cfg.ModelOf = func(string) (string, error) { return "", infergate.Errorf(infergate.EInvalid, "no such model") }
	start(t, cfg)
	b = waitStatus(t, st, b.ID, jobs.StatusFailed)
	if len(b.Errors) != 1 || b.Errors[0].Message != "no such model" {
		t.Errorf("errors %+v", b.Errors)
	}
}

func TestRate(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r, err := New(Config{Store: openStore(t, clk), Exec: newFakeExec(), Clock: clk, RateWindow: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := func(n int) []jobs.ItemResult {
		res := make([]jobs.ItemResult, n)
		for i := range res {
			res[i] = jobs.ItemResult{BatchID: "b", Seq: int64(i), State: jobs.ItemDone}
		}
		return res
	}
	if _, ok := r.Rate("b"); ok {
		t.Fatal("rate before any completion")
	}
	r.countCompletions(done(5), nil)
	if _, ok := r.Rate("b"); ok {
		t.Fatal("rate from one recording")
	}
	clk.Advance(time.Second)
	r.countCompletions(done(10), []jobs.ItemKey{{BatchID: "b", Seq: 0}}) // one stale
	r.countCompletions([]jobs.ItemResult{{BatchID: "b", State: jobs.ItemPending}}, nil)
	clk.Advance(time.Second)
	if got, ok := r.Rate("b"); !ok || got != 4.5 { // 9 items in 2s
		t.Fatalf("rate %v %v, want 4.5", got, ok)
	}
	clk.Advance(20 * time.Second) // everything leaves the window
	if _, ok := r.Rate("b"); ok {
		t.Fatal("rate from an empty window")
	}
}

func TestRetryDelay(t *testing.T) {
	r, err := New(Config{Store: openStore(t, nil), Exec: newFakeExec(), RetryDelay: time.Second, MaxRetryDelay: 10 * time.Second, RetryJitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 10 * time.Second, 60: 10 * time.Second} {
		if got := r.retryDelay(attempt); got != want {
			t.Errorf("attempt %d: %v, want %v", attempt, got, want)
		}
	}
	r.cfg.RetryJitter = 0.2
	for range 100 {
		if d := r.retryDelay(2); d < 1600*time.Millisecond || d > 2400*time.Millisecond {
			t.Fatalf("jittered delay %v", d)
		}
	}
}

func TestCrashedOwnerLeasesExpire(t *testing.T) {
	st := openStore(t, clock.Real{})
	ctx := context.Background()
	b := createBatch(t, st, 40, 24*time.Hour)
	// A runner that died holding leases on the first 16 items.
	if items, err := st.LeaseItems(ctx, b.ID, "dead", 16, 50*time.Millisecond); err != nil || len(items) != 16 {
		t.Fatal(len(items), err)
	}
	ex := newFakeExec()
	start(t, testConfig(st, ex, "alive"))
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	if out, _ := results(t, st, b, 40); len(out) != 40 {
		t.Errorf("%d done", len(out))
	}
	// The dead owner's late result is stale and changes nothing.
	stale, err := st.CompleteItems(ctx, "dead", []jobs.ItemResult{{BatchID: b.ID, Seq: 0, State: jobs.ItemFailed, Error: "late"}})
	if err != nil || len(stale) != 1 {
		t.Errorf("late completion: stale=%v err=%v", stale, err)
	}
}

func TestRunOnce(t *testing.T) {
	r, stop := start(t, testConfig(openStore(t, nil), newFakeExec(), "r1"))
	stop()
	if err := r.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
}

// sloppyExec answers the first item twice, an index it was not given, and
// the last item only after Execute has returned.
type sloppyExec struct {
	late sync.WaitGroup
}

func (s *sloppyExec) Execute(ctx context.Context, model string, bodies [][]byte, done func(int, Reply)) {
	// Counted before any answer, so that a test waiting once the batch has
	// completed also waits for this call's late answer.
	s.late.Add(1)
	f := newFakeExec()
	answer := func(i int) Reply {
		status, body, err := f.one(ctx, model, bodies[i])
		return Reply{Status: status, Body: body, Err: err}
	}
	last := len(bodies) - 1
	for i := range last {
		done(i, answer(i))
	}
	done(0, answer(0))
	done(len(bodies), answer(0))
	done(-1, answer(0))
	late := answer(last)
	go func() {
		defer s.late.Done()
		time.Sleep(20 * time.Millisecond)
		done(last, late)
	}()
}

func TestSloppyExecutor(t *testing.T) {
	st := openStore(t, clock.Real{})
	b := createBatch(t, st, 40, 24*time.Hour)
	ex := &sloppyExec{}
	cfg := testConfig(st, ex, "r1")
	cfg.Concurrency = 16 // a slot taken twice would show as a stall
	start(t, cfg)
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	ex.late.Wait()
	out, errs := results(t, st, b, 40)
	if len(out) != 40 || len(errs) != 0 || b.Completed != 40 || b.Failed != 0 {
		t.Fatalf("%d output, %d errors, counts %d/%d", len(out), len(errs), b.Completed, b.Failed)
	}
}

// bodyExec answers every item with a fixed status and body.
type bodyExec struct {
	status func(i int) int
	body   func(i int) []byte
}

func (x bodyExec) Execute(ctx context.Context, model string, bodies [][]byte, done func(int, Reply)) {
	for i, b := range bodies {
		var in struct {
			CID string `json:"cid"`
		}
		_ = json.Unmarshal(b, &in)
		n := seqOf(in.CID)
		done(i, Reply{Status: x.status(n), Body: x.body(n)})
	}
}

// TestResultBodies checks how results that are not a JSON value reach the
// output files: a body that is not JSON as a JSON string, an empty one as
// null, and a JSON body compacted.
func TestResultBodies(t *testing.T) {
	st := openStore(t, clock.Real{})
	b := createBatch(t, st, 4, 24*time.Hour)
	bodies := [][]byte{[]byte("plain <text>"), nil, []byte(`{ "a" : [1, 2] }`), []byte(`{"error":"no"}`)}
	ex := bodyExec{
		status: func(i int) int { return []int{200, 200, 200, 404}[i] },
		body:   func(i int) []byte { return bodies[i] },
	}
	start(t, testConfig(st, ex, "r1"))
	b = waitStatus(t, st, b.ID, jobs.StatusCompleted)
	out, errs := map[string]openai.BatchOutputLine{}, map[string]openai.BatchOutputLine{}
	for _, l := range readLines(t, st, b.OutputFileID) {
		out[l.CustomID] = l
	}
	for _, l := range readLines(t, st, b.ErrorFileID) {
		errs[l.CustomID] = l
	}
	if len(out) != 3 || len(errs) != 1 {
		t.Fatalf("%d output and %d error lines", len(out), len(errs))
	}
	var text string
	if l := out[cid(0)]; l.Response == nil || json.Unmarshal(l.Response.Body, &text) != nil || text != "plain <text>" {
		t.Errorf("not JSON: %+v, want the JSON string of the body", l.Response)
	}
	for c, want := range map[string]string{cid(1): `null`, cid(2): `{"a":[1,2]}`} {
		l, ok := out[c]
		if !ok || l.Response == nil || l.Response.StatusCode != 200 || string(l.Response.Body) != want {
			t.Errorf("%s: %+v, want body %s", c, l.Response, want)
		}
		if ok && !strings.HasPrefix(l.Response.RequestID, "req_") {
			t.Errorf("%s: request id %q", c, l.Response.RequestID)
		}
	}
	if l := errs[cid(3)]; l.Response == nil || l.Response.StatusCode != 404 || string(l.Response.Body) != `{"error":"no"}` {
		t.Errorf("error line: %+v", l.Response)
	}
}

// TestBatchesShareSlots checks that a poll fills the free slots a lease
// per batch per round: with every item held running, two batches each get
// half of the slots, and a lone batch gets all of them over several leases.
func TestBatchesShareSlots(t *testing.T) {
	for _, tc := range []struct {
		name    string
		batches int
		want    int // leased items per batch
	}{
		{"two batches", 2, 16},
		{"one batch", 1, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t, clock.Real{})
			var bs []*jobs.Batch
			for range tc.batches {
				bs = append(bs, createBatch(t, st, 100, 24*time.Hour))
			}
			ex := newFakeExec()
			ex.gate = make(chan struct{})
			ex.gated = func(string) bool { return true }
			cfg := testConfig(st, ex, "r1")
			cfg.LeaseBatch, cfg.Concurrency = 4, 32
			cfg.PollInterval = time.Hour // only the first poll, and wake-ups (none: nothing finishes)
			_, stop := start(t, cfg)
			waitFor(t, "every slot taken", func() bool { return ex.Waiting() == 32 })
			for i, b := range bs {
				if c := counts(t, st, b.ID); c.Leased != tc.want {
					t.Errorf("batch %d: %d items leased, want %d", i, c.Leased, tc.want)
				}
			}
			close(ex.gate)
			stop()
		})
	}
}
