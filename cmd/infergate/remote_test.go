package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/backend/remote/remotetest"
	"github.com/infergate/infergate/internal/kserve"
)

// TestServeRemoteModel runs the real binary with a model whose path is the
// URL of a fake KServe v2 upstream: the model's metadata comes from the
// upstream, concurrent requests reach it as one batched call, and every
// client gets its own rows back.
func TestServeRemoteModel(t *testing.T) {
	const dim, n = 4, 8
	up := remotetest.NewServer(dim)
	t.Cleanup(up.Close) // after the server process is gone (cleanups run last-in first-out)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "infergate.yaml")
	// Only a full batch of n fires before the 2s delay, and every request
	// is sent at once, so the n requests make one upstream call.
	yaml := fmt.Sprintf(`models:
  - name: remote
    path: %s
    max_batch_size: %d
    bulk_instances: -1
    classes:
      normal:
        max_batch_size: %d
        max_queue_delay: 2s
        default_timeout: 30s
`, up.ModelURL(), n, n)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startE2EServerArgs(t, filepath.Join(dir, "data"), "--config", cfg, "--runtime", "gorun")
	warmup := len(up.Calls())
	if warmup == 0 || up.MetadataCalls() == 0 {
		t.Errorf("startup made %d infer and %d metadata calls upstream, want warmup and metadata", warmup, up.MetadataCalls())
	}

	var meta struct {
		Inputs, Outputs []infergate.TensorSpec
	}
	s.getJSON("/v2/models/remote", &meta)
	if len(meta.Inputs) != 1 || meta.Inputs[0].Name != "input" || !slices.Equal(meta.Inputs[0].Shape, []int64{-1, dim}) ||
		len(meta.Outputs) != 2 || meta.Outputs[0].Name != "sum" || meta.Outputs[1].Name != "neg" {
		t.Fatalf("model metadata %+v, want the upstream's", meta)
	}

	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = inferRemote(s, float32(i+1), dim) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	calls := up.Calls()[warmup:]
	if want := []remotetest.Call{{Batch: n, Binary: true, Status: http.StatusOK}}; !slices.Equal(calls, want) {
		t.Errorf("upstream calls after warmup %+v, want %+v", calls, want)
	}
}

// inferRemote sends one row filled with v (JSON) and checks the answer:
// the row's sum and its negation.
func inferRemote(s *e2eServer, v float32, dim int) error {
	req := kserve.InferRequest{Inputs: []infergate.Tensor{fake.Input(dim, v)}}
	body, _ := kserve.AppendInferRequest(nil, &req, false)
	client := &http.Client{Timeout: 20 * time.Second}
	resp, err := client.Post(s.base+"/v2/models/remote/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	out, err := kserve.DecodeInferResponse(b, -1)
	if err != nil {
		return err
	}
	got := map[string][]float32{}
	for _, o := range out.Outputs {
		got[o.Name] = fake.Floats(o)
	}
	wantNeg := make([]float32, dim)
	for j := range wantNeg {
		wantNeg[j] = -v
	}
	if !slices.Equal(got["sum"], []float32{float32(dim) * v}) || !slices.Equal(got["neg"], wantNeg) {
		js, _ := json.Marshal(got)
		return fmt.Errorf("outputs %s, want sum %v and neg %v", js, float32(dim)*v, wantNeg)
	}
	return nil
}
