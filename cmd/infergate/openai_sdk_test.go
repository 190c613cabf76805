package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestOpenAISDKBatchFlow drives the batch API with the official OpenAI Go
// SDK, unchanged, against an in-process server: upload, create, poll,
// download, and cancel. Every result is checked against the real-time
// endpoint's answer for the same input.
func TestOpenAISDKBatchFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	base := startBatchTestServer(ctx, t)
	client := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("not-checked"), option.WithMaxRetries(0))

	const n = 40
	var jsonl strings.Builder
	bodies := map[string]string{}
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range n {
		vals := make([]string, 768)
		for j := range vals {
			vals[j] = fmt.Sprintf("%.4f", rng.Float32()*2-1)
		}
		body := `{"inputs":[{"name":"input","shape":[1,768],"datatype":"FP32","data":[` + strings.Join(vals, ",") + `]}]}`
		id := fmt.Sprintf("req-%03d", i)
		bodies[id] = body
		fmt.Fprintf(&jsonl, `{"custom_id":%q,"method":"POST","url":"/v2/models/mlp/infer","body":%s}`+"\n", id, body)
	}

	file, err := client.Files.New(ctx, openai.FileNewParams{
		File: openai.File(strings.NewReader(jsonl.String()), "input.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	batch, err := client.Batches.New(ctx, openai.BatchNewParams{InputFileID: file.ID,
		Endpoint: openai.BatchNewParamsEndpoint("/v2/models/mlp/infer"), CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatalf("create batch: %v", err)
	}
	batch = pollBatch(ctx, t, &client, batch.ID, openai.BatchStatusCompleted)
	if batch.RequestCounts.Total != n || batch.RequestCounts.Completed != n || batch.RequestCounts.Failed != 0 {
		t.Fatalf("request counts %+v", batch.RequestCounts)
	}
	resp, err := client.Files.Content(ctx, batch.OutputFileID)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	defer resp.Body.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			CustomID string `json:"custom_id"`
			Response struct {
				StatusCode int             `json:"status_code"`
				Body       json.RawMessage `json:"body"`
			} `json:"response"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("output line: %v: %s", err, sc.Bytes())
		}
		if seen[line.CustomID] {
			t.Fatalf("custom_id %s twice", line.CustomID)
		}
		seen[line.CustomID] = true
		if line.Response.StatusCode != 200 {
			t.Fatalf("%s: status %d", line.CustomID, line.Response.StatusCode)
		}
		want := realtime(ctx, t, base, bodies[line.CustomID])
		got := logits(t, line.Response.Body)
		for k := range want {
			if math.Abs(float64(got[k]-want[k])) > 1e-4*max(1, math.Abs(float64(want[k]))) {
				t.Fatalf("%s: batch %v, realtime %v", line.CustomID, got, want)
			}
		}
	}
	if len(seen) != n {
		t.Fatalf("%d results, want %d", len(seen), n)
	}

	// Cancel a larger batch right after creating it.
	var big strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&big, `{"custom_id":"c-%d","method":"POST","url":"/v2/models/mlp/infer","body":%s}`+"\n", i, bodies["req-000"])
	}
	file2, err := client.Files.New(ctx, openai.FileNewParams{
		File: openai.File(strings.NewReader(big.String()), "big.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	b2, err := client.Batches.New(ctx, openai.BatchNewParams{InputFileID: file2.ID,
		Endpoint: openai.BatchNewParamsEndpoint("/v2/models/mlp/infer"), CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatalf("create batch: %v", err)
	}
	if _, err := client.Batches.Cancel(ctx, b2.ID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	b2 = pollBatch(ctx, t, &client, b2.ID, openai.BatchStatusCancelled)
	c := b2.RequestCounts
	if c.Total != 3000 || c.Completed+c.Failed != 3000 {
		t.Fatalf("cancelled batch counts %+v: every item must end completed or failed", c)
	}
}

func pollBatch(ctx context.Context, t *testing.T, client *openai.Client, id string, want openai.BatchStatus) *openai.Batch {
	t.Helper()
	for {
		b, err := client.Batches.Get(ctx, id)
		if err != nil {
			t.Fatalf("get batch: %v", err)
		}
		if b.Status == want {
			return b
		}
		switch b.Status {
		case openai.BatchStatusFailed, openai.BatchStatusExpired, openai.BatchStatusCompleted, openai.BatchStatusCancelled:
			t.Fatalf("batch %s ended %s, want %s (errors %+v)", id, b.Status, want, b.Errors)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("batch %s still %s: %v", id, b.Status, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func realtime(ctx context.Context, t *testing.T, base, body string) []float32 {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/models/mlp/infer", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("realtime: %d %s", resp.StatusCode, b)
	}
	return logits(t, b)
}

func logits(t *testing.T, body []byte) []float32 {
	t.Helper()
	var r struct {
		Outputs []struct {
			Data []float32 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&r); err != nil || len(r.Outputs) != 1 || len(r.Outputs[0].Data) != 16 {
		t.Fatalf("response %s: %v", body, err)
	}
	return r.Outputs[0].Data
}
