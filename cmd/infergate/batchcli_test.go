package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/openai"
)

// startBatchTestServer starts an in-process server with the reference
// model and returns its base URL.
func startBatchTestServer(ctx context.Context, t *testing.T) string {
	t.Helper()
	cfg := config.Default()
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	var f serveFlags
	f.threads = -1
	log := slog.New(slog.DiscardHandler)
	models, err := resolveModels(cfg, &f, log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := startServer(ctx, cfg, models, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = srv.Close(c)
	})
	return "http://" + srv.Addr()
}

// writeBatchInput writes n valid lines for the mlp model; bad lists the
// (0-based) lines to replace with broken ones.
func writeBatchInput(t *testing.T, n int, bad ...int) string {
	t.Helper()
	vals := make([]string, 768)
	for j := range vals {
		vals[j] = fmt.Sprintf("%.3f", float64(j%17)/17-0.5)
	}
	body := `{"inputs":[{"name":"input","shape":[1,768],"datatype":"FP32","data":[` + strings.Join(vals, ",") + `]}]}`
	isBad := map[int]bool{}
	for _, b := range bad {
		isBad[b] = true
	}
	var sb strings.Builder
	for i := range n {
		if isBad[i] {
			sb.WriteString("{not json\n")
			continue
		}
		fmt.Fprintf(&sb, `{"custom_id":"req-%03d","method":"POST","url":"/v2/models/mlp/infer","body":%s}`+"\n", i, body)
	}
	path := filepath.Join(t.TempDir(), "input.jsonl")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBatchCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	base := startBatchTestServer(ctx, t)
	in := writeBatchInput(t, 30)
	out := t.TempDir()

	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"batch", "submit", in, "--model", "mlp", "--wait", "--out", out, "--url", base}, &stdout, &stderr); err != nil {
		t.Fatalf("submit: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	id := strings.TrimSpace(strings.SplitN(stdout.String(), "\n", 2)[0])
	if !strings.HasPrefix(id, "batch_") {
		t.Fatalf("first stdout line %q is not a batch id\n%s", id, &stdout)
	}
	if !strings.Contains(stderr.String(), "\r[") || !strings.Contains(stderr.String(), "30/30") {
		t.Errorf("no progress bar on stderr: %q", &stderr)
	}
	if !strings.Contains(stdout.String(), "completed: 30/30 completed, 0 failed") {
		t.Errorf("no summary in stdout:\n%s", &stdout)
	}
	// The batch's cost: its items' share of measured busy time, so not 0.
	if m := regexp.MustCompile(`cost \$([0-9.e+-]+)`).FindStringSubmatch(stdout.String()); m == nil {
		t.Errorf("no cost in the summary:\n%s", &stdout)
	} else if c, err := strconv.ParseFloat(m[1], 64); err != nil || c <= 0 {
		t.Errorf("cost %q: want a positive figure", m[1])
	}
	f, err := os.Open(filepath.Join(out, id+"_output.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line openai.BatchOutputLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("output line: %v: %s", err, sc.Bytes())
		}
		if seen[line.CustomID] {
			t.Fatalf("custom_id %s twice", line.CustomID)
		}
		seen[line.CustomID] = true
		if line.Response == nil || line.Response.StatusCode != 200 {
			t.Fatalf("%s: %s", line.CustomID, sc.Bytes())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 30 {
		t.Fatalf("%d output lines, want 30", len(seen))
	}

	// status --json
	stdout.Reset()
	if err := run(ctx, []string{"batch", "status", id, "--json", "--url", base}, &stdout, &stderr); err != nil {
		t.Fatalf("status: %v", err)
	}
	var b openai.BatchObject
	if err := json.Unmarshal(stdout.Bytes(), &b); err != nil {
		t.Fatalf("status --json: %v\n%s", err, &stdout)
	}
	if b.ID != id || b.Status != openai.StatusCompleted || b.RequestCounts.Completed != 30 {
		t.Fatalf("status: %+v", b)
	}
	// status, human
	stdout.Reset()
	if err := run(ctx, []string{"batch", "status", "--url", base, id}, &stdout, &stderr); err != nil {
		t.Fatalf("status: %v", err)
	}
	if !strings.Contains(stdout.String(), "30 completed, 0 failed, 30 total") {
		t.Errorf("status:\n%s", &stdout)
	}

	// list --json
	stdout.Reset()
	if err := run(ctx, []string{"batch", "list", "--json", "--limit", "5", "--url", base}, &stdout, &stderr); err != nil {
		t.Fatalf("list: %v", err)
	}
	var l openai.ListResponse[openai.BatchObject]
	if err := json.Unmarshal(stdout.Bytes(), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, &stdout)
	}
	if len(l.Data) != 1 || l.Data[0].ID != id {
		t.Fatalf("list: %+v", l)
	}
	stdout.Reset()
	if err := run(ctx, []string{"batch", "list", "--url", base}, &stdout, &stderr); err != nil {
		t.Fatalf("list: %v", err)
	}
	if !strings.Contains(stdout.String(), id) {
		t.Errorf("list:\n%s", &stdout)
	}

	// results into another folder
	out2 := t.TempDir()
	stdout.Reset()
	if err := run(ctx, []string{"batch", "results", id, "--out", out2, "--url", base}, &stdout, &stderr); err != nil {
		t.Fatalf("results: %v", err)
	}
	a, _ := os.ReadFile(filepath.Join(out, id+"_output.jsonl"))
	c, err := os.ReadFile(filepath.Join(out2, id+"_output.jsonl"))
	if err != nil || !bytes.Equal(a, c) {
		t.Fatalf("results: %v, same content %v", err, bytes.Equal(a, c))
	}

	// cancel of a finished batch: the server's 409, clearly
	err = run(ctx, []string{"batch", "cancel", id, "--url", base}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "HTTP 409") {
		t.Fatalf("cancel of a completed batch: %v", err)
	}
	t.Logf("cancel: %v", err)

	// unknown batch: the server's 404
	err = run(ctx, []string{"batch", "status", "batch_nope", "--url", base}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("status of an unknown batch: %v", err)
	}
}

func TestBatchCLISubmitBadFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	base := startBatchTestServer(ctx, t)
	in := writeBatchInput(t, 5, 1, 3)
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"batch", "submit", in, "--model", "mlp", "--wait", "--url", base, "--out", t.TempDir()}, &stdout, &stderr)
	if err == nil {
		t.Fatalf("submit of a bad file succeeded:\n%s", &stdout)
	}
	t.Logf("err: %v\nstderr:\n%s", err, &stderr)
	for _, want := range []string{"line 2", "line 4"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, &stderr)
		}
	}

	// A model that is not served: the server's 400 with its message.
	err = run(ctx, []string{"batch", "submit", in, "--model", "nosuch", "--url", base}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Fatalf("submit to an unknown model: %v", err)
	}
	t.Logf("unknown model: %v", err)
}

func TestBatchProgressLine(t *testing.T) {
	now := time.Unix(1000, 0)
	rate, eta := 1834.0, int64(1005)
	b := &openai.BatchObject{Status: openai.StatusInProgress, RequestCounts: openai.RequestCounts{Total: 20000, Completed: 10400},
		Infergate: &openai.BatchExtension{ItemsPerSec: &rate, EstimatedCompletionAt: &eta}}
	got := strings.TrimSpace(progressLine(b, rate, now))
	if want := "[##########..........]  52% 10400/20000 1834 items/s ETA 5s"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	// No server rate: measured between observations, never invented.
	b.Infergate = nil
	var p progress
	if r := p.rate(b, now); r >= 0 {
		t.Fatalf("rate from one observation: %v", r)
	}
	b.RequestCounts.Completed = 11400
	if r := p.rate(b, now.Add(2*time.Second)); r != 500 {
		t.Fatalf("measured rate %v, want 500", r)
	}
	if got := progressLine(b, -1, now); !strings.Contains(got, "- items/s ETA ?") {
		t.Fatalf("unknown rate: %q", got)
	}
}

func TestBatchClientSendsAPIKey(t *testing.T) {
	for _, key := range []string{"", "k-0123456789abcdef"} {
		t.Setenv("INFERGATE_API_KEY", key)
		var got string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = r.Header.Get("Authorization")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"object":"list","data":[],"has_more":false}`))
		}))
		c, err := newBatchClient(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.send(t.Context(), http.MethodGet, "/v1/batches", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.Close()
		want := ""
		if key != "" {
			want = "Bearer " + key
		}
		if got != want {
			t.Errorf("with INFERGATE_API_KEY=%q the client sent Authorization %q, want %q", key, got, want)
		}
	}
}
