package main

import (
	"bufio"
	"bytes"
	"context"
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

	"github.com/jackc/pgx/v5"

	"github.com/infergate/infergate/internal/jobs/postgres/pgtest"
	"github.com/infergate/infergate/internal/openai"
)

// replica is one `infergate serve` process on the shared PostgreSQL store.
type replica struct {
	name    string
	cmd     *exec.Cmd
	stderr  *stderrWatcher
	exited  chan struct{}
	waitErr error
	base    string
}

var replicaClient = &http.Client{Timeout: 10 * time.Second}

// startReplica starts `infergate serve` with its own data folder (for the
// generated model) and the shared config, and waits for its serving line.
// It is SIGKILLed at cleanup if still running.
func startReplica(t *testing.T, bin, name, configPath string) *replica {
	t.Helper()
	r := &replica{name: name, stderr: &stderrWatcher{addrc: make(chan string, 1)}, exited: make(chan struct{})}
	r.cmd = exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--config", configPath,
		"--log-level", "info")
	r.cmd.Stdout = io.Discard
	r.cmd.Stderr = r.stderr
	r.cmd.WaitDelay = 5 * time.Second
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		r.kill(t)
		if t.Failed() {
			s := r.stderr.String()
			if len(s) > 6000 {
				s = "..." + s[len(s)-6000:]
			}
			t.Logf("stderr of replica %s (pid %d):\n%s", r.name, r.cmd.Process.Pid, s)
		}
	})
	return r
}

// waitServing waits for the serving line and then for /v2/health/ready.
func (r *replica) waitServing(t *testing.T) {
	t.Helper()
	select {
	case addr := <-r.stderr.addrc:
		r.base = "http://" + addr
	case <-r.exited:
		t.Fatalf("replica %s exited before serving (%v); stderr:\n%s", r.name, r.waitErr, r.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("replica %s: no serving line within 60s; stderr:\n%s", r.name, r.stderr.String())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := replicaClient.Get(r.base + "/v2/health/ready")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s: not ready within 30s (%v)", r.name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill SIGKILLs the process and waits for it to be gone.
func (r *replica) kill(t *testing.T) {
	select {
	case <-r.exited:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("replica %s (pid %d) did not exit after SIGKILL", r.name, r.cmd.Process.Pid)
	}
}

// call sends a request and decodes a 200 JSON answer into out.
func (r *replica) call(t *testing.T, c *http.Client, method, path, contentType string, body io.Reader, out any) {
	t.Helper()
	req, err := http.NewRequest(method, r.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, r.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s on %s: status %d, err %v: %.500s", method, path, r.name, resp.StatusCode, err, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s on %s: %v: %.500s", method, path, r.name, err, b)
		}
	}
}

func (r *replica) batch(t *testing.T, id string) *openai.BatchObject {
	t.Helper()
	var b openai.BatchObject
	r.call(t, replicaClient, "GET", "/v1/batches/"+id, "", nil, &b)
	return &b
}

// replicaInput is the JSONL input: n v2 requests for model mlp.
func replicaInput(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var buf bytes.Buffer
	buf.Grow(n * 4000)
	for i := range n {
		fmt.Fprintf(&buf, `{"custom_id":"rep-%06d","method":"POST","url":"/v2/models/mlp/infer","body":{"inputs":[{"name":"input","shape":[1,768],"datatype":"FP32","data":[`, i)
		for j := range 768 {
			if j > 0 {
				buf.WriteByte(',')
			}
			buf.Write(strconv.AppendFloat(nil, float64(rng.Float32()*2-1), 'f', 3, 32))
		}
		buf.WriteString("]}]}}\n")
	}
	return buf.Bytes()
}

// leasesByPid counts the items of a batch leased by each process: the
// runner's lease owner is "host-pid-random".
func leasesByPid(t *testing.T, db *pgx.Conn, batchID string, state string) map[int]int {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT i.lease_owner, count(*) FROM items i JOIN batches b ON b.pk = i.batch_pk
		WHERE b.id = $1 AND i.state = $2 GROUP BY i.lease_owner`, batchID, state)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	var owner string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&owner, &n}, func() error {
		parts := strings.Split(owner, "-")
		pid := -1
		if len(parts) >= 3 {
			pid, _ = strconv.Atoi(parts[len(parts)-2])
		}
		out[pid] += n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReplicasSharePostgres runs three real servers on one PostgreSQL job
// store, submits a 10,000-item batch to one, SIGKILLs that one midway,
// and checks that the two survivors finish the batch with every custom_id
// exactly once across the output and error files. The killed replica's
// leases are rescued once they expire (batch_lease 4s).
func TestReplicasSharePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and three servers")
	}
	const (
		items = 10000
		lease = 4 * time.Second
	)
	srv := pgtest.Start(t)
	url := srv.URL(t)
	bin := buildBinary(t)
	configPath := filepath.Join(t.TempDir(), "infergate.yaml")
	if err := os.WriteFile(configPath, fmt.Appendf(nil, "store: %q\nbatch_lease: %s\n", url, lease), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())

	t0 := time.Now()
	reps := []*replica{startReplica(t, bin, "a", configPath), startReplica(t, bin, "b", configPath), startReplica(t, bin, "c", configPath)}
	for _, r := range reps {
		r.waitServing(t)
	}
	a, b, c := reps[0], reps[1], reps[2]
	t.Logf("3 replicas ready in %s", time.Since(t0).Round(time.Millisecond))

	// Upload to a, create the batch on a.
	input := replicaInput(items)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "replicas.jsonl")
	fw.Write(input)
	mw.Close()
	slow := &http.Client{Timeout: 2 * time.Minute}
	tu := time.Now()
	var file openai.FileObject
	a.call(t, slow, "POST", "/v1/files", mw.FormDataContentType(), &body, &file)
	upload := time.Since(tu)
	req, _ := json.Marshal(map[string]string{"input_file_id": file.ID, "endpoint": "/v2/models/mlp/infer", "completion_window": "24h"})
	tc := time.Now()
	var created openai.BatchObject
	a.call(t, slow, "POST", "/v1/batches", "application/json", bytes.NewReader(req), &created)
	create := time.Since(tc)
	t.Logf("input %d bytes uploaded in %s; batch %s created in %s", len(input), upload.Round(time.Millisecond),
		created.ID, create.Round(time.Millisecond))

	// Midway, with a holding leases, kill a.
	pidA := a.cmd.Process.Pid
	var atKill *openai.BatchObject
	deadline := time.Now().Add(60 * time.Second)
	for {
		bo := b.batch(t, created.ID)
		done := bo.RequestCounts.Completed + bo.RequestCounts.Failed
		if done >= items*3/10 && leasesByPid(t, db, created.ID, "leased")[pidA] > 0 {
			atKill = bo
			break
		}
		if done >= items*8/10 || time.Now().After(deadline) {
			t.Fatalf("no moment to kill replica a: %d of %d finished", done, items)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.kill(t)
	tk := time.Now()
	heldByA := leasesByPid(t, db, created.ID, "leased")[pidA]
	doneByA := leasesByPid(t, db, created.ID, "done")[pidA] + leasesByPid(t, db, created.ID, "failed")[pidA]
	t.Logf("killed replica a (pid %d) at %d/%d finished (%s after the batch was created); it held %d leases",
		pidA, atKill.RequestCounts.Completed+atKill.RequestCounts.Failed, items, tk.Sub(tc).Round(time.Millisecond), heldByA)

	// The survivors finish it.
	var final *openai.BatchObject
	deadline = time.Now().Add(90 * time.Second)
	for {
		bo := c.batch(t, created.ID)
		if bo.Status == "completed" || bo.Status == "failed" || bo.Status == "expired" || bo.Status == "cancelled" {
			final = bo
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the batch did not finish within 90s of the kill: %+v", bo)
		}
		time.Sleep(50 * time.Millisecond)
	}
	afterKill := time.Since(tk)
	total := time.Since(tc)
	if final.Status != "completed" {
		t.Fatalf("batch ended %s, want completed: %+v", final.Status, final)
	}

	// Every custom_id exactly once across the output and error files,
	// downloaded from b.
	seen := make(map[string]int, items)
	lines := func(id *string) int {
		if id == nil {
			return 0
		}
		resp, err := slow.Get(b.base + "/v1/files/" + *id + "/content")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("download %s: status %d", *id, resp.StatusCode)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		n := 0
		for sc.Scan() {
			var line openai.BatchOutputLine
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("file %s line %d: %v", *id, n+1, err)
			}
			seen[line.CustomID]++
			n++
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		return n
	}
	nOut, nErr := lines(final.OutputFileID), lines(final.ErrorFileID)
	lost, dup := 0, 0
	for i := range items {
		id := fmt.Sprintf("rep-%06d", i)
		switch k := seen[id]; {
		case k == 0:
			lost++
		case k > 1:
			dup += k - 1
		}
		delete(seen, id)
	}
	rc := final.RequestCounts
	if lost != 0 || dup != 0 || len(seen) != 0 || nOut != rc.Completed || nErr != rc.Failed || rc.Total != items {
		t.Errorf("custom_ids: %d lost, %d duplicated, %d unknown; files %d+%d lines; request_counts %+v",
			lost, dup, len(seen), nOut, nErr, rc)
	}

	// Who did what, from the store.
	var again int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM items i JOIN batches b ON b.pk = i.batch_pk
		WHERE b.id = $1 AND i.attempts > 1`, created.ID).Scan(&again); err != nil {
		t.Fatal(err)
	}
	// Replicas that both saw the batch finish may both write its files;
	// one FinishBatch wins, and the other's files stay unreferenced.
	var written int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM files WHERE purpose = 'batch_output'`).Scan(&written); err != nil {
		t.Fatal(err)
	}
	by := leasesByPid(t, db, created.ID, "done")
	for pid, n := range leasesByPid(t, db, created.ID, "failed") {
		by[pid] += n
	}
	if by[pidA] != doneByA {
		t.Errorf("replica a recorded %d items before its death, %d after", doneByA, by[pidA])
	}
	if by[b.cmd.Process.Pid] == 0 || by[c.cmd.Process.Pid] == 0 {
		t.Errorf("recorded by replica: a %d, b %d, c %d: a survivor did nothing", by[pidA], by[b.cmd.Process.Pid], by[c.cmd.Process.Pid])
	}
	t.Logf("SUMMARY items=%d replicas=3 killed=1 lease=%s completed=%d failed=%d lost=%d duplicated=%d "+
		"held_by_killed=%d leased_more_than_once=%d recorded_by a=%d b=%d c=%d output_files_written=%d "+
		"time: create=%s to_kill=%s kill_to_done=%s total=%s",
		items, lease, rc.Completed, rc.Failed, lost, dup, heldByA, again,
		by[pidA], by[b.cmd.Process.Pid], by[c.cmd.Process.Pid], written,
		create.Round(time.Millisecond), tk.Sub(tc).Round(time.Millisecond), afterKill.Round(time.Millisecond),
		total.Round(time.Millisecond))
}
