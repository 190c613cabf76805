package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPlanCommand runs 'infergate plan' on a profile measured on the
// reference machine (testdata) and checks the two recommendations the
// planner issue names, from the simulated numbers in the JSON.
func TestPlanCommand(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantMode string
	}{
		{"low volume, 10 ms, low sensitivity", []string{"--rate", "5", "--slo-ms", "10", "--cost-sensitivity", "low"}, "realtime"},
		{"high volume, hours, high sensitivity", []string{"--rate", "2000", "--slo-ms", "21600000", "--cost-sensitivity", "high"}, "batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			svg := filepath.Join(dir, "cost.svg")
			args := append([]string{"plan", "--data-dir", filepath.Join(dir, "data"), "--runtime", "gorun", "--profile", "testdata/mlp.profile.json",
				"--duration", "20s", "--json", "--svg", svg}, tt.args...)
			var out, errb bytes.Buffer
			if err := run(t.Context(), args, &out, &errb); err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			var got struct {
				Candidates []struct {
					Mode      string  `json:"mode"`
					P99MS     float64 `json:"p99_ms"`
					CostPer1k float64 `json:"cost_per_1k"`
					MeetsSLO  bool    `json:"meets_slo"`
				} `json:"candidates"`
				Recommendation struct {
					Mode      string         `json:"mode"`
					Settings  map[string]any `json:"settings"`
					P99MS     float64        `json:"p99_ms"`
					CostPer1k float64        `json:"cost_per_1k"`
					Reasons   []string       `json:"reasons"`
				} `json:"recommendation"`
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("%v: %s", err, out.String())
			}
			r := got.Recommendation
			if r.Mode != tt.wantMode || len(r.Reasons) < 3 || r.Settings == nil {
				t.Fatalf("recommendation %+v, want %s", r, tt.wantMode)
			}
			// Because the numbers say so: no SLO-meeting candidate of
			// another mode is cheaper (batch) or, at equal cost, faster
			// (realtime).
			for _, c := range got.Candidates {
				if !c.MeetsSLO || c.Mode == r.Mode {
					continue
				}
				if tt.wantMode == "batch" && c.CostPer1k <= r.CostPer1k {
					t.Errorf("%s candidate costs %g per 1k, not more than batch's %g", c.Mode, c.CostPer1k, r.CostPer1k)
				}
				if tt.wantMode == "realtime" && c.CostPer1k >= r.CostPer1k*0.999 && c.P99MS < r.P99MS {
					t.Errorf("%s candidate as cheap (%g) and faster (%g ms) than realtime (%g, %g ms)", c.Mode, c.CostPer1k, c.P99MS, r.CostPer1k, r.P99MS)
				}
			}
			if b, err := os.ReadFile(svg); err != nil || !strings.Contains(string(b), "<polyline") {
				t.Errorf("cost plot: %v", err)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{40, 18, 20}, 20},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range tests {
		in := slices.Clone(tc.in)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("median reordered its input: %v", tc.in)
		}
	}
}
