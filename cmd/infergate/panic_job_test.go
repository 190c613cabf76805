package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/openai"
)

// panicRuntime opens fake sessions that panic on any batch holding a row
// whose first value is 13: a model that crashes on one input.
type panicRuntime struct{ fake.Runtime }

func (panicRuntime) Open(string, backend.Options) (backend.Session, error) {
	return &panicSession{}, nil
}

type panicSession struct{ fake.Session }

func (p *panicSession) Run(ctx context.Context, in []infergate.Tensor) ([]infergate.Tensor, error) {
	vals := fake.Floats(in[0])
	for i := 0; i < len(vals); i += 4 {
		if vals[i] == 13 {
			panic("the model crashed on this input")
		}
	}
	return p.Session.Run(ctx, in)
}

// TestBatchJobSurvivesARuntimePanic: a 1,000-item job through the real
// server and batch runner, on a runtime that panics on one item. The
// server lives, the item ends in the error file after its retries, and the
// other 999 complete, each exactly once.
func TestBatchJobSurvivesARuntimePanic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 1,000-item job with retries")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cfg := config.Default()
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	log := slog.New(slog.DiscardHandler)
	models := []config.Model{{Name: "sum", Path: "unused", MaxBatchSize: 64, WarmupRuns: -1, BulkInstances: -1}}
	srv, err := startServer(ctx, cfg, models, log, panicRuntime{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = srv.Close(c)
	})
	const n, poison = 1000, 500
	var sb strings.Builder
	for i := range n {
		v := float32(i%7) + 0.5
		if i == poison {
			v = 13
		}
		fmt.Fprintf(&sb, `{"custom_id":"req-%04d","method":"POST","url":"/v2/models/sum/infer","body":{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[%g,1,1,1]}]}}`+"\n", i, v)
	}
	in := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(in, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	if err := run(ctx, []string{"batch", "submit", in, "--model", "sum", "--wait", "--out", out, "--url", "http://" + srv.Addr()}, &stdout, &stderr); err != nil {
		t.Fatalf("submit: %v\n%s\n%s", err, &stdout, &stderr)
	}
	id := strings.TrimSpace(strings.SplitN(stdout.String(), "\n", 2)[0])
	read := func(name string) map[string][]byte {
		lines := map[string][]byte{}
		f, err := os.Open(filepath.Join(out, id+name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l openai.BatchOutputLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if _, dup := lines[l.CustomID]; dup {
				t.Fatalf("%s twice in %s", l.CustomID, name)
			}
			lines[l.CustomID] = append([]byte(nil), sc.Bytes()...)
		}
		return lines
	}
	ok, errs := read("_output.jsonl"), read("_error.jsonl")
	if len(ok) != n-1 || len(errs) != 1 {
		t.Fatalf("%d output and %d error lines, want %d and 1", len(ok), len(errs), n-1)
	}
	bad, found := errs[fmt.Sprintf("req-%04d", poison)]
	if !found || !strings.Contains(string(bad), `"code":"internal"`) {
		t.Fatalf("error file: %s", errs)
	}
	// The server is alive and ready.
	resp, err := http.Get("http://" + srv.Addr() + "/v2/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ready after the job: %d", resp.StatusCode)
	}
	t.Logf("1,000-item job on a runtime that panics on one item: %d completed, 1 in the error file (%s), in %v",
		len(ok), strings.TrimSpace(string(bad)), time.Since(start).Round(time.Millisecond))
}
