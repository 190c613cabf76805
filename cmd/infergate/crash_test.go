//go:build crash

package main

// TestCrashRecovery SIGKILLs the real server again and again while it runs
// a batch, and checks that the batch still ends with every input line
// answered exactly once. Run it with scripts/crashtest.sh or
// `make crash-test`; CRASH_ITEMS (default 10000), CRASH_KILLS (default 20),
// CRASH_SEED (default 1) and CRASH_LEASE (a Go duration, written to a
// config file as batch_lease; default: the server's default) change the run.
//
// What is measured for each crash, honestly from outside the process:
//
//   - seen: completed+failed of the last successful poll before the kill;
//   - durable: done+failed items in the SQLite store once the process is
//     dead (the store is opened read-write by this test between the kill
//     and the restart, with no server running). durable < seen would be a
//     lost acknowledged completion and fails the test; durable-seen are
//     completions committed between the last poll and the kill;
//   - redo: the items the store still shows leased by the killed process
//     (its lease owner carries its pid) at that moment: their results, if
//     any were computed, were not durable, and a later process executes
//     them again. They are bounded by the runner's Concurrency (512 in
//     cmd/infergate/jobs.go: a slot is freed only once its outcome is
//     committed); items are leased LeaseBatch (128) at a time. leased: every item
//     leased in the store then, the earlier dead processes' included;
//   - ready: from the restart to the first 200 of /v2/health/ready;
//   - resume: from the restart until completed+failed first moves past its
//     value at the first poll after ready.
//
// The dead process's leases are only taken over once they expire
// (config batch_lease, default 10s; no command-line flag), so the batch
// cannot finish sooner than that after the last kill.

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/jobs/sqlite"
	"github.com/infergate/infergate/internal/openai"
)

func crashEnvInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// crashProc is one server process on the shared data folder.
type crashProc struct {
	cmd     *exec.Cmd
	stderr  *stderrWatcher
	exited  chan struct{}
	waitErr error
	base    string
}

// startCrashProc starts `infergate serve` on dataDir and a free port and
// waits for its serving line. It is SIGKILLed at cleanup if still running.
func startCrashProc(t *testing.T, bin, dataDir, configPath string) *crashProc {
	t.Helper()
	p := &crashProc{stderr: &stderrWatcher{addrc: make(chan string, 1)}, exited: make(chan struct{})}
	args := []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "info"}
	if configPath != "" {
		args = append(args, "--config", configPath)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = io.Discard
	p.cmd.Stderr = p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			s := p.stderr.String()
			if len(s) > 8000 {
				s = "..." + s[len(s)-8000:]
			}
			t.Logf("stderr of server pid %d:\n%s", p.cmd.Process.Pid, s)
		}
	})
	select {
	case addr := <-p.stderr.addrc:
		p.base = "http://" + addr
	case <-p.exited:
		t.Fatalf("server exited before serving (%v); stderr:\n%s", p.waitErr, p.stderr.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("no serving line within 90s; stderr:\n%s", p.stderr.String())
	}
	return p
}

// kill SIGKILLs the process and waits for it to be gone.
func (p *crashProc) kill(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("server process %d did not exit after SIGKILL", p.cmd.Process.Pid)
	}
}

var crashClient = &http.Client{Timeout: 5 * time.Second}

// getBatch fetches the batch; err on any transport or status problem.
func (p *crashProc) getBatch(id string) (*openai.BatchObject, error) {
	resp, err := crashClient.Get(p.base + "/v1/batches/" + id)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET batch: status %d: %s", resp.StatusCode, b)
	}
	var bo openai.BatchObject
	if err := json.Unmarshal(b, &bo); err != nil {
		return nil, fmt.Errorf("GET batch: %v: %s", err, b)
	}
	return &bo, nil
}

func finished(b *openai.BatchObject) int { return b.RequestCounts.Completed + b.RequestCounts.Failed }

func terminal(status string) bool {
	switch status {
	case "completed", "failed", "expired", "cancelled":
		return true
	}
	return false
}

// waitReady polls /v2/health/ready until it answers 200.
func (p *crashProc) waitReady(t *testing.T, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		resp, err := crashClient.Get(p.base + "/v2/health/ready")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/v2/health/ready not 200 within %s (last err %v)", limit, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// download returns the content of a file.
func (p *crashProc) download(t *testing.T, id string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Get(p.base + "/v1/files/" + id + "/content")
	if err != nil {
		t.Fatalf("download %s: %v", id, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("download %s: status %d, err %v: %.500s", id, resp.StatusCode, err, b)
	}
	return b
}

// crashInput builds the JSONL input: n v2 requests for model mlp.
func crashInput(n int, rng *rand.Rand) []byte {
	var buf bytes.Buffer
	buf.Grow(n * 4700)
	for i := range n {
		fmt.Fprintf(&buf, `{"custom_id":"crash-%06d","method":"POST","url":"/v2/models/mlp/infer","body":{"inputs":[{"name":"input","shape":[1,768],"datatype":"FP32","data":[`, i)
		for j := range 768 {
			if j > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(strconv.FormatFloat(float64(rng.Float32()*2-1), 'f', 4, 32))
		}
		buf.WriteString("]}]}}\n")
	}
	return buf.Bytes()
}

// createBatch uploads the input with multipart and creates the batch.
func (p *crashProc) createBatch(t *testing.T, input []byte) string {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if err := mw.WriteField("purpose", "batch"); err != nil {
		t.Fatal(err)
	}
	fw, err := mw.CreateFormFile("file", "crash.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(input)
	mw.Close()
	c := &http.Client{Timeout: 5 * time.Minute}
	resp, err := c.Post(p.base+"/v1/files", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: status %d: %s", resp.StatusCode, b)
	}
	var f openai.FileObject
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("upload: %v: %s", err, b)
	}
	req, _ := json.Marshal(map[string]string{"input_file_id": f.ID, "endpoint": "/v2/models/mlp/infer", "completion_window": "24h"})
	resp, err = c.Post(p.base+"/v1/batches", "application/json", bytes.NewReader(req))
	if err != nil {
		t.Fatalf("create batch: %v", err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create batch: status %d: %s", resp.StatusCode, b)
	}
	var bo openai.BatchObject
	if err := json.Unmarshal(b, &bo); err != nil {
		t.Fatalf("create batch: %v: %s", err, b)
	}
	if bo.Status != "in_progress" && bo.Status != "validating" {
		t.Fatalf("create batch: status %q: %s", bo.Status, b)
	}
	return bo.ID
}

// crashRecord is one crash's figures.
type crashRecord struct {
	wait    time.Duration // time before the kill
	idle    time.Duration // time waited after wait for the process to hold a lease
	seen    int           // completed+failed at the last poll before the kill
	durable int           // done+failed in the store after the kill
	redo    int           // items still leased by the dead process
	leased  int           // items leased in the store, by any dead process
	ready   time.Duration // restart to /v2/health/ready 200
	resume  time.Duration // restart to the first progress; -1 if none seen
	after   int           // completed+failed at the first poll after ready
}

func TestCrashRecovery(t *testing.T) {
	items := crashEnvInt(t, "CRASH_ITEMS", 10000)
	kills := crashEnvInt(t, "CRASH_KILLS", 20)
	seed := uint64(crashEnvInt(t, "CRASH_SEED", 1))
	if items < 1 {
		t.Fatal("CRASH_ITEMS must be positive")
	}
	rng := rand.New(rand.NewPCG(seed, 0xc0ffee))
	bin := buildBinary(t)
	dataDir := t.TempDir()
	crashLeaseFor := config.Default().BatchLease
	configPath := ""
	if v := os.Getenv("CRASH_LEASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CRASH_LEASE=%q: %v", v, err)
		}
		crashLeaseFor = d
		configPath = filepath.Join(t.TempDir(), "infergate.yaml")
		if err := os.WriteFile(configPath, []byte("batch_lease: "+d.String()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("items=%d kills=%d seed=%d lease=%s data=%s", items, kills, seed, crashLeaseFor, dataDir)

	t0 := time.Now()
	proc := startCrashProc(t, bin, dataDir, configPath)
	proc.waitReady(t, 90*time.Second)
	t.Logf("first start: ready after %s (includes generating the model)", time.Since(t0).Round(time.Millisecond))
	input := crashInput(items, rng)
	t.Logf("input: %d bytes", len(input))
	tc := time.Now()
	batchID := proc.createBatch(t, input)
	t.Logf("batch %s created in %s", batchID, time.Since(tc).Round(time.Millisecond))

	// stuck estimates the items held by dead processes' leases that have
	// not yet expired: they cannot progress, so they are not counted as
	// work left when sizing the waits.
	type deadLease struct {
		n     int
		until time.Time
	}
	var dead []deadLease
	stuck := func() int {
		n := 0
		for _, d := range dead {
			if time.Now().Before(d.until) {
				n += d.n
			}
		}
		return n
	}

	var recs []crashRecord
	rate := 0.0 // items/s, measured between polls of earlier lives
	for k := 0; k < kills; k++ {
		last, err := proc.getBatch(batchID)
		if err != nil {
			t.Fatalf("crash %d: poll: %v", k+1, err)
		}
		// Wait a random time sized so that the remaining kills fit before
		// the batch ends: at most half of the work left over the kills to
		// go, at the rate measured so far, and never past that many items
		// (the first wait has no rate yet). A restarted server is ready
		// within about a second and then runs thousands of items a second,
		// so a fixed floor of tens of milliseconds would finish a
		// 10,000-item batch in a dozen lives.
		left := items - finished(last) - stuck()
		budgetItems := max(left/2/(kills-k), 1)
		maxWait := 2 * time.Second
		if rate > 0 {
			budget := time.Duration(float64(left) / 2 / float64(kills-k) / rate * float64(time.Second))
			maxWait = min(maxWait, budget)
		}
		maxWait = max(maxWait, 10*time.Millisecond)
		wait := 5*time.Millisecond + time.Duration(rng.Int64N(int64(maxWait-5*time.Millisecond)+1))
		t1, f1 := time.Now(), finished(last)
		deadline := t1.Add(wait)
		for time.Now().Before(deadline) && finished(last)-f1 < budgetItems {
			time.Sleep(min(10*time.Millisecond, time.Until(deadline)))
			if b, err := proc.getBatch(batchID); err == nil {
				last = b
			}
		}
		wait = time.Since(t1) // as waited: the item budget may end it early
		if d := finished(last) - f1; d > 0 {
			r := float64(d) / wait.Seconds()
			if rate == 0 {
				rate = r
			} else {
				rate = 0.5*rate + 0.5*r
			}
		}
		if terminal(last.Status) || last.Status == "finalizing" {
			t.Logf("crash %d: the batch is already %s (rate %.0f/s); no more kills", k+1, last.Status, rate)
			break
		}
		// When every unfinished item is under a dead process's lease, the
		// server is idle until the earliest of them expires: wait (reading
		// the store, which WAL mode allows beside the server) until the
		// process holds a lease, so that the kill hits work in flight.
		ti := time.Now()
		for crashLeasedBy(t, filepath.Join(dataDir, "jobs.db"), proc.cmd.Process.Pid) == 0 {
			if time.Since(ti) > crashLeaseFor+5*time.Second {
				t.Fatalf("crash %d: the server took no lease within %s", k+1, time.Since(ti))
			}
			if b, err := proc.getBatch(batchID); err == nil {
				last = b
				if terminal(b.Status) || b.Status == "finalizing" {
					break
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		idle := time.Since(ti)
		if terminal(last.Status) || last.Status == "finalizing" {
			t.Logf("crash %d: the batch is already %s (rate %.0f/s); no more kills", k+1, last.Status, rate)
			break
		}
		// A last poll right before the kill.
		if b, err := proc.getBatch(batchID); err == nil {
			last = b
		}
		rec := crashRecord{wait: wait, idle: idle, seen: finished(last)}
		proc.kill(t)

		// Look at the store with no server running.
		st, err := sqlite.Open(filepath.Join(dataDir, "jobs.db"), clock.Real{})
		if err != nil {
			t.Fatalf("crash %d: opening the store after the kill: %v", k+1, err)
		}
		cnt, err := st.CountItems(context.Background(), batchID)
		st.Close()
		if err != nil {
			t.Fatalf("crash %d: counting items: %v", k+1, err)
		}
		rec.durable, rec.leased = cnt.Done+cnt.Failed, cnt.Leased
		rec.redo = crashLeasedBy(t, filepath.Join(dataDir, "jobs.db"), proc.cmd.Process.Pid)
		if cnt.Total() != items {
			t.Errorf("crash %d: the store holds %d items, want %d", k+1, cnt.Total(), items)
		}
		if rec.durable < rec.seen {
			t.Errorf("crash %d: %d items finished in the store after the kill, but %d were reported before it: acknowledged progress lost",
				k+1, rec.durable, rec.seen)
		}
		dead = append(dead, deadLease{n: rec.redo, until: time.Now().Add(crashLeaseFor)})

		restart := time.Now()
		proc = startCrashProc(t, bin, dataDir, configPath)
		proc.waitReady(t, 90*time.Second)
		rec.ready = time.Since(restart)
		first, err := proc.getBatch(batchID)
		if err != nil {
			t.Fatalf("crash %d: first poll after restart: %v", k+1, err)
		}
		rec.after = finished(first)
		if rec.after < rec.durable {
			t.Errorf("crash %d: the restarted server reports %d finished, the store had %d", k+1, rec.after, rec.durable)
		}
		rec.resume = -1
		resumeLimit := time.Now().Add(crashLeaseFor + 30*time.Second)
		for time.Now().Before(resumeLimit) {
			b, err := proc.getBatch(batchID)
			if err == nil && (finished(b) > rec.after || terminal(b.Status)) {
				rec.resume = time.Since(restart)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if rec.resume < 0 {
			t.Errorf("crash %d: no progress within %s of the restart", k+1, crashLeaseFor+30*time.Second)
		}
		recs = append(recs, rec)
	}

	// Let the batch finish: the last dead leases expire LeaseFor after the
	// last kill, and their items run after that.
	tw := time.Now()
	var final *openai.BatchObject
	limit := time.Now().Add(crashLeaseFor + 5*time.Minute)
	for {
		b, err := proc.getBatch(batchID)
		if err == nil && terminal(b.Status) {
			final = b
			break
		}
		if time.Now().After(limit) {
			t.Fatalf("the batch did not finish within %s after the last restart (last %+v, err %v)",
				crashLeaseFor+5*time.Minute, b, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("batch %s after the last restart in %s (since the start %s)",
		final.Status, time.Since(tw).Round(time.Millisecond), time.Since(tc).Round(time.Millisecond))

	// The per-crash table.
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "\n%5s %8s %8s %8s %8s %6s %6s %7s %9s %9s\n", "crash", "idle", "wait", "seen", "durable", "+dur", "redo", "leased", "ready", "resume")
	var sumReady, sumResume, maxReady, maxResume time.Duration
	sumRedo, maxRedo := 0, 0
	for i, r := range recs {
		fmt.Fprintf(&tbl, "%5d %8s %8s %8d %8d %6d %6d %7d %9s %9s\n", i+1, r.idle.Round(time.Millisecond), r.wait.Round(time.Millisecond), r.seen, r.durable,
			r.durable-r.seen, r.redo, r.leased, r.ready.Round(time.Millisecond), r.resume.Round(time.Millisecond))
		sumReady += r.ready
		sumResume += r.resume
		maxReady, maxResume = max(maxReady, r.ready), max(maxResume, r.resume)
		sumRedo += r.redo
		maxRedo = max(maxRedo, r.redo)
	}
	t.Logf("per crash (wait: the random wait, cut short at its share of the items left; idle: then waited for the process to hold a lease; seen: finished at the last poll before the kill; durable: done+failed in the store after it; "+
		"+dur: committed after the last poll; redo: items leased by the killed process, to be executed again; "+
		"leased: all leased items, earlier dead processes' included):%s", tbl.String())

	if final.Status != "completed" {
		t.Fatalf("batch ended %s, want completed: %+v", final.Status, final)
	}
	rc := final.RequestCounts
	if rc.Total != items || rc.Completed+rc.Failed != rc.Total {
		t.Errorf("request_counts %+v: want total %d and completed+failed == total", rc, items)
	}

	// Every custom_id exactly once across the output and error files.
	seen := make(map[string]int, items)
	reasons := map[string]int{} // error file: why, by code and message (digits dropped)
	countFile := func(what string, id *string) int {
		if id == nil {
			return 0
		}
		data := proc.download(t, *id)
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		n := 0
		for sc.Scan() {
			var line openai.BatchOutputLine
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("%s line %d: %v: %.300s", what, n+1, err, sc.Bytes())
			}
			seen[line.CustomID]++
			if what == "errors" {
				why := "?"
				switch {
				case line.Error != nil:
					why = line.Error.Code + ": " + strings.Map(func(r rune) rune {
						if r >= '0' && r <= '9' {
							return 'N'
						}
						return r
					}, line.Error.Message)
				case line.Response != nil:
					why = fmt.Sprintf("status %d", line.Response.StatusCode)
				}
				reasons[why]++
			}
			n++
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return n
	}
	nOut := countFile("output", final.OutputFileID)
	nErr := countFile("errors", final.ErrorFileID)
	for why, c := range reasons {
		t.Logf("error file: %d x %s", c, why)
	}
	lost, dup := 0, 0
	for i := range items {
		id := fmt.Sprintf("crash-%06d", i)
		switch c := seen[id]; {
		case c == 0:
			lost++
		case c > 1:
			dup += c - 1
		}
		delete(seen, id)
	}
	unknown := len(seen)
	if nOut != rc.Completed || nErr != rc.Failed {
		t.Errorf("files hold %d output and %d error lines; request_counts %+v", nOut, nErr, rc)
	}
	if lost != 0 || dup != 0 || unknown != 0 {
		t.Errorf("custom_ids: %d lost, %d duplicated, %d unknown", lost, dup, unknown)
	}
	n := max(len(recs), 1)
	t.Logf("SUMMARY items=%d kills=%d completed=%d failed=%d output_lines=%d error_lines=%d lost=%d duplicated=%d "+
		"ready_avg=%s ready_max=%s resume_avg=%s resume_max=%s redo_total=%d redo_max=%d (runner Concurrency %d, LeaseBatch %d) "+
		"final_wait=%s (batch_lease %s)",
		items, len(recs), rc.Completed, rc.Failed, nOut, nErr, lost, dup,
		(sumReady / time.Duration(n)).Round(time.Millisecond), maxReady.Round(time.Millisecond),
		(sumResume / time.Duration(n)).Round(time.Millisecond), maxResume.Round(time.Millisecond),
		sumRedo, maxRedo, runnerConcurrency, runnerLeaseBatch, time.Since(tw).Round(time.Millisecond), crashLeaseFor)
	if len(recs) < kills {
		t.Errorf("only %d of %d kills happened before the batch finished", len(recs), kills)
	}
}

// crashLeasedBy counts the items the store shows leased by the process
// pid: the runner's lease owner is "host-pid-random".
func crashLeasedBy(t *testing.T, dbPath string, pid int) int {
	t.Helper()
	db, err := sql.Open("sqlite", dbPath+"?_pragma=query_only(1)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatalf("opening %s: %v", dbPath, err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT lease_owner, count(*) FROM items WHERE state = 'leased' GROUP BY lease_owner`)
	if err != nil {
		t.Fatalf("counting leases: %v", err)
	}
	defer rows.Close()
	mark := fmt.Sprintf("-%d-", pid)
	n := 0
	for rows.Next() {
		var owner string
		var c int
		if err := rows.Scan(&owner, &c); err != nil {
			t.Fatalf("counting leases: %v", err)
		}
		if strings.Contains(owner, mark) {
			n += c
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("counting leases: %v", err)
	}
	return n
}
