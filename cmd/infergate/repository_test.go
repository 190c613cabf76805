//go:build cgo

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/assets"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/kserve"
)

// TestServeThirdPartyModelFromRepository serves the PaddleOCR text-direction
// classifier (a real third-party ONNX model, input x [N,3,H,W] with dynamic
// H and W, output [N,2] probabilities) from a model-repository folder
// through ONNX Runtime, over HTTP with binary tensors, and checks that
// concurrent requests of different image sizes are each answered correctly.
func TestServeThirdPartyModelFromRepository(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the pinned ONNX Runtime library is linux/amd64")
	}
	ctx := t.Context()
	cache := assets.DefaultCacheDir()
	src, err := assets.Fetch(ctx, cache, assets.PaddleOCRCls)
	if err != nil {
		t.Fatalf("fetch model: %v", err)
	}
	if _, err := assets.Fetch(ctx, cache, assets.ORTLibrary); err != nil {
		t.Fatalf("fetch ONNX Runtime: %v", err)
	}
	repo := t.TempDir()
	dir := filepath.Join(repo, "textdir")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := "max_batch_size: 8\nwarmup_runs: -1\nclasses:\n  normal: {policy: hybrid, max_queue_delay: 20ms}\n"
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.ModelRepository, cfg.Runtime = "127.0.0.1:0", t.TempDir(), repo, "onnxruntime"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var f serveFlags
	models, err := resolveModels(cfg, &f, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 1 || models[0].Name != "textdir" {
		t.Fatalf("models %+v, want the repository's textdir", models)
	}
	srv, err := startServer(ctx, cfg, models, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Close(c)
	})
	url := "http://" + srv.Addr() + "/v2/models/textdir/infer"
	client := &http.Client{Timeout: 30 * time.Second}

	// Six concurrent requests, two image sizes: the scheduler may batch
	// same-size images together and must never mix the sizes.
	sizes := [][2]int64{{48, 192}, {48, 160}}
	type answer struct {
		probs []float32
		err   error
	}
	answers := make([]answer, 6)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() {
			hw := sizes[i%2]
			answers[i].probs, answers[i].err = classify(ctx, client, url, hw[0], hw[1], float32(i))
		})
	}
	wg.Wait()
	for i, a := range answers {
		if a.err != nil {
			t.Fatalf("request %d: %v", i, a.err)
		}
		if len(a.probs) != 2 || math.Abs(float64(a.probs[0]+a.probs[1])-1) > 1e-3 || a.probs[0] < 0 || a.probs[1] < 0 {
			t.Fatalf("request %d: probabilities %v, want two non-negative numbers summing to 1", i, a.probs)
		}
	}
	// The same image alone gives the same answer as in a batch.
	again, err := classify(ctx, client, url, sizes[0][0], sizes[0][1], 0)
	if err != nil {
		t.Fatal(err)
	}
	for j := range again {
		if math.Abs(float64(again[j]-answers[0].probs[j])) > 1e-4 {
			t.Fatalf("alone %v, concurrent %v", again, answers[0].probs)
		}
	}
}

// classify sends one [1,3,h,w] image (a gradient offset by seed) with
// binary tensors and returns the output probabilities.
func classify(ctx context.Context, client *http.Client, url string, h, w int64, seed float32) ([]float32, error) {
	n := 3 * h * w
	raw := make([]byte, 0, 4*n)
	for k := range n {
		v := float32(k%w)/float32(w) - 0.5 + seed/10
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}
	req := &kserve.InferRequest{
		Inputs:       []infergate.Tensor{{Name: "x", DataType: infergate.FP32, Shape: []int64{1, 3, h, w}, Data: raw}},
		BinaryOutput: true,
	}
	body, hl := kserve.AppendInferRequest(nil, req, true)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set(kserve.HeaderContentLength, strconv.Itoa(hl))
	resp, err := client.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &infergate.Error{Code: infergate.EInternal, Message: "status " + resp.Status + ": " + string(b)}
	}
	rhl := len(b)
	if v := resp.Header.Get(kserve.HeaderContentLength); v != "" {
		if rhl, err = strconv.Atoi(v); err != nil {
			return nil, err
		}
	}
	out, err := kserve.DecodeInferResponse(b, rhl)
	if err != nil {
		return nil, err
	}
	o := out.Outputs[0]
	probs := make([]float32, len(o.Data)/4)
	for i := range probs {
		probs[i] = math.Float32frombits(binary.LittleEndian.Uint32(o.Data[4*i:]))
	}
	return probs, nil
}
