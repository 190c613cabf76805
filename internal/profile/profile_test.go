package profile

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/backend/fake"
)

// curve builds the points a backend with batch latency lat(n) and perfect
// instance scaling would measure.
func curve(c Config, sizes []int, lat func(n int) time.Duration, mem func(n int) int64) []Point {
	var out []Point
	for _, n := range sizes {
		d := lat(n)
		out = append(out, Point{BatchSize: n, Instances: c.Instances, Threads: c.Threads, P50MS: ms(d), P99MS: ms(d) * 1.2,
			ItemsPerSec: float64(c.Instances*n) / d.Seconds(), MemoryBytes: mem(n)})
	}
	return out
}

func TestChoose(t *testing.T) {
	sizes := []int{1, 2, 4, 8, 16, 32, 64, 128}
	lin := func(n int) time.Duration { return time.Millisecond + time.Duration(n)*500*time.Microsecond }
	mem := func(n int) int64 { return 100<<20 + int64(n)<<20 }
	pts := slices.Concat(
		curve(Config{2, 1}, sizes, lin, mem),
		// A two-thread instance: 1.6x faster per batch, one instance.
		curve(Config{1, 2}, sizes, func(n int) time.Duration { return lin(n) * 10 / 16 }, mem),
	)
	tests := []struct {
		name          string
		lim           Limits
		wantBatch     int
		wantInstances int
		wantKnee      int
		wantMemSafe   int
	}{
		// p99 = 1.2 x (1 ms + 0.5 ms n): batch 64 is 39.6 ms, 128 is 78 ms.
		// 2x1 at 64: 2*64/33ms = 3,879/s; 1x2 at 128: 128/40.6 ms = 3,150/s.
		{"50 ms limit", Limits{BatchLatency: 50 * time.Millisecond}, 64, 2, 16, 128},
		{"no limit", Limits{}, 128, 2, 16, 128},
		// 20 ms: 2x1 fits up to 32 (20.4 ms? no: 1.2*(1+16)=20.4 > 20) -> 16 at 10.8 ms
		// gives 2*16/9ms = 3,556/s; 1x2 fits up to 32: 1.2*17*0.625 = 12.75 ms, 32/10.625 ms = 3,012/s.
		{"20 ms limit", Limits{BatchLatency: 20 * time.Millisecond}, 16, 2, 16, 128},
		// Memory: only up to batch 16 fits 120 MB.
		{"memory limit", Limits{MemoryBytes: 120 << 20}, 16, 2, 16, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Choose(pts, tt.lim)
			if err != nil {
				t.Fatal(err)
			}
			if c.BatchSize != tt.wantBatch || c.Instances != tt.wantInstances || c.KneeBatchSize != tt.wantKnee || c.MemorySafeMaxBatch != tt.wantMemSafe {
				t.Errorf("choice batch %d on %dx%d, knee %d, memory-safe %d; want batch %d on %d instances, knee %d, memory-safe %d\n%s",
					c.BatchSize, c.Instances, c.Threads, c.KneeBatchSize, c.MemorySafeMaxBatch, tt.wantBatch, tt.wantInstances, tt.wantKnee, tt.wantMemSafe,
					strings.Join(c.Reasons, "\n"))
			}
			// The choice is the best fitting point, exactly.
			for _, p := range pts {
				fit := (tt.lim.BatchLatency == 0 || p.P99MS <= ms(tt.lim.BatchLatency)) && (tt.lim.MemoryBytes == 0 || p.MemoryBytes <= tt.lim.MemoryBytes)
				if fit && p.ItemsPerSec > c.ItemsPerSec {
					t.Errorf("point batch %d on %s fits with %.0f items/s, more than the choice's %.0f", p.BatchSize, p.Config(), p.ItemsPerSec, c.ItemsPerSec)
				}
			}
			if len(c.Reasons) < 3 {
				t.Errorf("reasons %q", c.Reasons)
			}
		})
	}
	if _, err := Choose(pts, Limits{BatchLatency: time.Millisecond}); err == nil {
		t.Error("no point fits 1 ms, yet Choose chose")
	}
}

func TestSizesAndConfigs(t *testing.T) {
	if got := Sizes(64, []int{24, 0, 100, 8}); !slices.Equal(got, []int{1, 2, 4, 8, 16, 24, 32, 64}) {
		t.Errorf("Sizes = %v", got)
	}
	if got := Sizes(48, nil); !slices.Equal(got, []int{1, 2, 4, 8, 16, 32, 48}) {
		t.Errorf("Sizes(48) = %v", got)
	}
	for _, tt := range []struct {
		cpus int
		want []Config
	}{
		{1, []Config{{1, 1}}},
		{2, []Config{{1, 1}, {1, 2}, {2, 1}}},
		{4, []Config{{1, 1}, {1, 4}, {2, 2}, {4, 1}}},
	} {
		if got := Configs(tt.cpus); !slices.Equal(got, tt.want) {
			t.Errorf("Configs(%d) = %v, want %v", tt.cpus, got, tt.want)
		}
	}
}

// TestRunWithAKnownCurve profiles a fake backend whose batch latency is
// 1 ms + 0.5 ms per item and checks the choice under a 50 ms limit against
// the points measured.
func TestRunWithAKnownCurve(t *testing.T) {
	lat := func(n int) time.Duration { return time.Millisecond + time.Duration(n)*500*time.Microsecond }
	var seen []Point
	pts, err := Run(t.Context(), Options{
		Open:     func(int) (backend.Session, error) { return &fake.Session{Latency: lat}, nil },
		Sizes:    []int{1, 8, 64, 128},
		Configs:  []Config{{2, 1}},
		Duration: 150 * time.Millisecond, PricePerInstanceHour: 0.1,
		Progress: func(p Point) { seen = append(seen, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 4 || len(seen) != 4 {
		t.Fatalf("%d points, %d reported", len(pts), len(seen))
	}
	for i, p := range pts {
		if p.Instances != 2 || p.Threads != 1 || p.ItemsPerSec <= 0 || p.P50MS <= 0 || p.P99MS < p.P50MS || p.Batches == 0 || p.CostPer1k <= 0 {
			t.Errorf("point %d: %+v", i, p)
		}
	}
	c, err := Choose(pts, Limits{BatchLatency: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// The choice is the highest measured throughput among the points whose
	// measured p99 fits the limit. (On a quiet machine that is batch 64:
	// 33 ms against 128's 65 ms; a loaded one can push 64's p99 over the
	// limit too, so the test checks the rule on what was measured.)
	best := Point{}
	for _, p := range pts {
		if p.P99MS <= 50 && p.ItemsPerSec > best.ItemsPerSec {
			best = p
		}
	}
	if c.BatchSize != best.BatchSize {
		t.Errorf("chose batch %d under 50 ms, want %d, the fastest that fits: %v", c.BatchSize, best.BatchSize, c.Reasons)
	}
	if lat(64) > 50*time.Millisecond || lat(128) <= 50*time.Millisecond {
		t.Fatal("the known curve no longer straddles the limit")
	}
}

func TestWriteSVG(t *testing.T) {
	pts := curve(Config{2, 1}, []int{1, 2, 4, 8}, func(n int) time.Duration { return time.Duration(n+1) * time.Millisecond },
		func(int) int64 { return 1 << 20 })
	c, err := Choose(pts, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := WriteSVG(&sb, "mlp <profile>", pts, c); err != nil {
		t.Fatal(err)
	}
	svg := sb.String()
	for _, want := range []string{"<svg", "</svg>", "<polyline", "mlp &lt;profile&gt;", "circled: the choice, batch 8 on 2x1", "2 instance(s) x 1 thread(s)"} {
		if !strings.Contains(svg, want) {
			t.Errorf("svg lacks %q", want)
		}
	}
	if err := WriteSVG(&sb, "", nil, nil); err == nil {
		t.Error("plotted nothing without an error")
	}
}
