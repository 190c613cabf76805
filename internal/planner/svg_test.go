package planner

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"
)

func TestCostVsLoad(t *testing.T) {
	req := Request{Profile: linearProfile(1.2), Workload: Workload{Pattern: PatternPoisson, Duration: 20 * time.Second, Seed: 1},
		SLO: 50 * time.Millisecond, CostSensitivity: "high", PricePerInstanceHour: 1, MaxInstances: 4}
	rates := []float64{10, 100, 1000}
	curves, err := CostVsLoad(context.Background(), req, rates)
	if err != nil {
		t.Fatal(err)
	}
	if len(curves) != 3 {
		t.Fatalf("%d curves", len(curves))
	}
	for _, c := range curves {
		if len(c.CostPer1k) != len(rates) {
			t.Fatalf("%s: %d points", c.Mode, len(c.CostPer1k))
		}
		// Loaded cost per request falls as load rises on always-on modes.
		if c.Mode != ModeBatch && !(c.CostPer1k[0] > c.CostPer1k[1]) {
			t.Errorf("%s: cost per 1k %v does not fall with load", c.Mode, c.CostPer1k)
		}
	}
	// Batch windows cannot meet a 50 ms SLO.
	for _, v := range curves[2].CostPer1k {
		if !math.IsNaN(v) {
			t.Errorf("batch meets a 50 ms SLO: %v", curves[2].CostPer1k)
		}
	}
	var sb strings.Builder
	if err := WriteCostSVG(&sb, "cost <vs> load", rates, curves); err != nil {
		t.Fatal(err)
	}
	if s := sb.String(); !strings.Contains(s, "<polyline") || !strings.Contains(s, "cost &lt;vs&gt; load") || !strings.Contains(s, "hybrid") {
		t.Errorf("svg: %.300s", s)
	}
	if err := WriteCostSVG(&sb, "", []float64{1}, nil); err == nil {
		t.Error("plotted nothing without an error")
	}
}
