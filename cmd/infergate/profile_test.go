package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/profile"
)

// TestProfileCommand runs the real binary's profile command (one child
// process per configuration) on the pure-Go runtime, and checks its JSON,
// the config it writes and its plot.
func TestProfileCommand(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgOut, svgOut := filepath.Join(dir, "chosen.yaml"), filepath.Join(dir, "curves.svg")
	cmd := exec.Command(bin, "profile", "--runtime", "gorun", "--data-dir", filepath.Join(dir, "data"), "--configs", "1x1,2x1",
		"--max-batch", "4", "--point-duration", "100ms", "--latency-limit", "10s", "--json", "--write-config", cfgOut, "--svg", svgOut)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var got struct {
		Points []profile.Point `json:"points"`
		Choice *profile.Choice `json:"choice"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// The interface the acceptance checks read.
	var raw struct {
		Points []map[string]any `json:"points"`
		Choice map[string]any   `json:"choice"`
	}
	_ = json.Unmarshal(out, &raw)
	for _, k := range []string{"batch_size", "instances", "threads", "p50_ms", "p99_ms", "items_per_sec", "memory_bytes"} {
		if _, ok := raw.Points[0][k]; !ok {
			t.Errorf("a point lacks %q: %v", k, raw.Points[0])
		}
	}
	if len(got.Points) != 6 {
		t.Fatalf("%d points, want 3 sizes x 2 configurations", len(got.Points))
	}
	best := 0.0
	for _, p := range got.Points {
		if p.ItemsPerSec <= 0 || p.P50MS <= 0 || p.MemoryBytes <= 0 {
			t.Errorf("point %+v", p)
		}
		best = max(best, p.ItemsPerSec)
	}
	if got.Choice == nil || got.Choice.ItemsPerSec != best || len(got.Choice.Reasons) == 0 {
		t.Errorf("choice %+v, want the fastest point (%.0f items/s)", got.Choice, best)
	}
	c, err := config.Load(cfgOut)
	if err != nil {
		t.Fatalf("written config: %v", err)
	}
	if len(c.Models) != 1 || c.Models[0].MaxBatchSize != got.Choice.BatchSize || c.Models[0].Instances != got.Choice.Instances {
		t.Errorf("written config %+v, choice %+v", c.Models, got.Choice)
	}
	svg, err := os.ReadFile(svgOut)
	if err != nil || !strings.Contains(string(svg), "<polyline") {
		t.Errorf("plot: %v", err)
	}
}
