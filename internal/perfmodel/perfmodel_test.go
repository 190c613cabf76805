package perfmodel

import (
	"math"
	"sync"
	"testing"
	"time"
)

const ms = time.Millisecond

// near reports whether two durations agree up to the rounding of the
// float64 seconds the model stores.
func near(got, want time.Duration) bool {
	d := got - want
	return d >= -2 && d <= 2
}

func approx(got, want float64) bool {
	return math.Abs(got-want) <= 1e-9*math.Max(1, math.Abs(want))
}

type obs struct {
	n int
	d time.Duration
}

func build(observations ...obs) *Model {
	m := New()
	for _, o := range observations {
		m.Observe(o.n, o.d)
	}
	return m
}

func TestEstimateEmpty(t *testing.T) {
	m := New()
	for _, n := range []int{-1, 0, 1, 8, 1000} {
		if d, ok := m.Estimate(n); ok || d != 0 {
			t.Errorf("Estimate(%d) on an empty model = %v, %v; want 0, false", n, d, ok)
		}
		if m.Measured(n) {
			t.Errorf("Measured(%d) on an empty model", n)
		}
	}
	if p := m.Points(); len(p) != 0 {
		t.Errorf("Points = %+v, want none", p)
	}
}

func TestObserveIgnoresInvalid(t *testing.T) {
	m := build(obs{0, ms}, obs{-3, ms}, obs{4, -ms})
	if p := m.Points(); len(p) != 0 {
		t.Errorf("Points = %+v, want none", p)
	}
	if _, ok := m.Estimate(4); ok {
		t.Error("Estimate(4) ok after invalid observations only")
	}
	// A zero duration is a valid measurement.
	m.Observe(2, 0)
	if d, ok := m.Estimate(2); !ok || d != 0 {
		t.Errorf("Estimate(2) = %v, %v; want 0, true", d, ok)
	}
}

func TestEstimateNonPositive(t *testing.T) {
	m := build(obs{1, ms})
	for _, n := range []int{0, -1} {
		if _, ok := m.Estimate(n); ok {
			t.Errorf("Estimate(%d) ok", n)
		}
	}
}

func TestEstimateMeasured(t *testing.T) {
	m := build(obs{1, 3 * ms}, obs{4, 5 * ms}, obs{16, 12 * ms}, obs{4, 7 * ms})
	tests := []struct {
		n    int
		want time.Duration
	}{
		{1, 3 * ms},
		{4, 6 * ms}, // mean of 5 and 7
		{16, 12 * ms},
	}
	for _, tc := range tests {
		if !m.Measured(tc.n) {
			t.Errorf("Measured(%d) = false", tc.n)
		}
		if d, ok := m.Estimate(tc.n); !ok || !near(d, tc.want) {
			t.Errorf("Estimate(%d) = %v, %v; want %v, true", tc.n, d, ok, tc.want)
		}
	}
	for _, n := range []int{2, 3, 8, 32} {
		if m.Measured(n) {
			t.Errorf("Measured(%d) = true for an unobserved size", n)
		}
	}
}

func TestRunningMeanThenEWMA(t *testing.T) {
	// Observations 1, 2, ..., 10 ms: a plain mean, 5.5 ms. From the 11th
	// on, mean += 0.1 * (x - mean).
	m := New()
	mean := 0.0
	for i := 1; i <= 10; i++ {
		m.Observe(8, time.Duration(i)*ms)
		mean += (float64(i) - mean) / float64(i)
		if p := m.Points()[0]; !approx(p.MeanMS, mean) || p.Count != int64(i) {
			t.Fatalf("after %d observations: mean %g count %d, want %g %d", i, p.MeanMS, p.Count, mean, i)
		}
	}
	if !approx(mean, 5.5) {
		t.Fatalf("test arithmetic: mean of 1..10 = %g", mean)
	}
	tests := []struct {
		x    float64 // ms
		want float64 // ms
	}{
		{20, 5.5 + 0.1*(20-5.5)},       // 6.95
		{20, 6.95 + 0.1*(20-6.95)},     // 8.255
		{0.5, 8.255 + 0.1*(0.5-8.255)}, // 7.4795
	}
	for i, tc := range tests {
		m.Observe(8, time.Duration(tc.x*float64(ms)))
		p := m.Points()[0]
		if !approx(p.MeanMS, tc.want) {
			t.Errorf("observation %d: mean %g ms, want %g", 11+i, p.MeanMS, tc.want)
		}
		if d, _ := m.Estimate(8); !near(d, time.Duration(tc.want*float64(ms))) {
			t.Errorf("observation %d: Estimate %v, want %g ms", 11+i, d, tc.want)
		}
		if !approx(p.LastMS, tc.x) {
			t.Errorf("LastMS = %g, want %g", p.LastMS, tc.x)
		}
	}
	p := m.Points()[0]
	if p.Count != 13 || !approx(p.MinMS, 0.5) {
		t.Errorf("count %d min %g, want 13 0.5", p.Count, p.MinMS)
	}
	if !approx(p.ItemsPerSec, 8/(7.4795e-3)) {
		t.Errorf("ItemsPerSec = %g, want %g", p.ItemsPerSec, 8/(7.4795e-3))
	}
}

// A cold-start outlier is averaged away within the first ten observations
// rather than decaying at 10% a step.
func TestColdStartOutlier(t *testing.T) {
	m := build(obs{1, 100 * ms})
	for range 9 {
		m.Observe(1, 10*ms)
	}
	if d, _ := m.Estimate(1); !near(d, 19*ms) { // (100 + 9*10) / 10
		t.Errorf("Estimate = %v, want 19ms", d)
	}
}

func TestInterpolateAndExtrapolate(t *testing.T) {
	tests := []struct {
		name string
		obs  []obs
		n    int
		want time.Duration
	}{
		{"midpoint", []obs{{2, 10 * ms}, {10, 50 * ms}}, 6, 30 * ms},
		{"quarter", []obs{{2, 10 * ms}, {10, 50 * ms}}, 4, 20 * ms},
		{"between nearest neighbours only", []obs{{1, 1 * ms}, {4, 4 * ms}, {8, 20 * ms}, {64, 500 * ms}}, 6, 12 * ms},
		{"flat", []obs{{4, 8 * ms}, {8, 8 * ms}}, 5, 8 * ms},
		{"decreasing", []obs{{4, 10 * ms}, {8, 6 * ms}}, 7, 7 * ms},
		// Above the largest measured size: per-item cost of the largest.
		{"above largest", []obs{{2, 10 * ms}, {10, 50 * ms}}, 20, 100 * ms},
		{"above only point", []obs{{4, 8 * ms}}, 5, 10 * ms},
		{"far above", []obs{{1, 1 * ms}, {8, 4 * ms}}, 64, 32 * ms},
		// Below the smallest: per-item scaling, floored at half.
		{"below, scaled", []obs{{4, 40 * ms}, {8, 60 * ms}}, 3, 30 * ms},
		{"below, at half", []obs{{4, 40 * ms}}, 2, 20 * ms},
		{"below, floored at half", []obs{{4, 40 * ms}}, 1, 20 * ms},
		{"below, floored with many", []obs{{16, 32 * ms}, {32, 40 * ms}}, 1, 16 * ms},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := build(tc.obs...)
			d, ok := m.Estimate(tc.n)
			if !ok || !near(d, tc.want) {
				t.Errorf("Estimate(%d) = %v, %v; want %v, true", tc.n, d, ok, tc.want)
			}
			if m.Measured(tc.n) {
				t.Errorf("Measured(%d) = true", tc.n)
			}
		})
	}
}

func TestPointsSorted(t *testing.T) {
	m := build(obs{32, 16 * ms}, obs{1, 2 * ms}, obs{8, 4 * ms}, obs{4, 4 * ms}, obs{8, 6 * ms}, obs{2, 0})
	want := []Point{
		{BatchSize: 1, Count: 1, MeanMS: 2, MinMS: 2, LastMS: 2, ItemsPerSec: 500},
		{BatchSize: 2, Count: 1, MeanMS: 0, MinMS: 0, LastMS: 0, ItemsPerSec: 0}, // no rate from a zero mean
		{BatchSize: 4, Count: 1, MeanMS: 4, MinMS: 4, LastMS: 4, ItemsPerSec: 1000},
		{BatchSize: 8, Count: 2, MeanMS: 5, MinMS: 4, LastMS: 6, ItemsPerSec: 1600},
		{BatchSize: 32, Count: 1, MeanMS: 16, MinMS: 16, LastMS: 16, ItemsPerSec: 2000},
	}
	got := m.Points()
	if len(got) != len(want) {
		t.Fatalf("Points = %+v, want %d points", got, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.BatchSize != w.BatchSize || g.Count != w.Count || !approx(g.MeanMS, w.MeanMS) || !approx(g.MinMS, w.MinMS) ||
			!approx(g.LastMS, w.LastMS) || !approx(g.ItemsPerSec, w.ItemsPerSec) {
			t.Errorf("point %d = %+v, want %+v", i, g, w)
		}
	}
	// Points is a copy: changing it does not change the model.
	got[0].MeanMS = 1e9
	if p := m.Points()[0]; !approx(p.MeanMS, 2) {
		t.Errorf("Points aliased the model: %+v", p)
	}
}

func TestConcurrentObserveEstimate(t *testing.T) {
	m := New()
	var wg sync.WaitGroup
	const writers, perWriter = 4, 500
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				n := 1 << ((w + i) % 7) // 1..64
				m.Observe(n, time.Duration(n)*ms)
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for i := range perWriter {
				if d, ok := m.Estimate(1 + i%100); ok && d <= 0 {
					t.Errorf("Estimate(%d) = %v", 1+i%100, d)
				}
				_ = m.Measured(i % 64)
				_ = m.Points()
			}
		})
	}
	wg.Wait()
	var total int64
	prev := 0
	for _, p := range m.Points() {
		if p.BatchSize <= prev {
			t.Errorf("points not sorted: %d after %d", p.BatchSize, prev)
		}
		prev = p.BatchSize
		total += p.Count
		// Every observation of size n took n ms.
		if !approx(p.MeanMS, float64(p.BatchSize)) {
			t.Errorf("size %d: mean %g ms", p.BatchSize, p.MeanMS)
		}
	}
	if total != writers*perWriter {
		t.Errorf("total count %d, want %d", total, writers*perWriter)
	}
}

func TestStd(t *testing.T) {
	tests := []struct {
		name string
		obs  []time.Duration
		want float64 // ms
	}{
		{"constant", []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}, 0},
		// Population std of {4, 6} ms is 1 ms.
		{"two", []time.Duration{4 * time.Millisecond, 6 * time.Millisecond}, 1},
		// Of {1..10} ms: sqrt(8.25).
		{"ten", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 2.8722813232690143},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			for _, d := range tt.obs {
				if d < time.Microsecond {
					d *= time.Millisecond
				}
				m.Observe(1, d)
			}
			if got := m.Points()[0].StdMS; math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("std %v ms, want %v", got, tt.want)
			}
		})
	}
	// Past ten observations the weights decay: a steady value pulls the
	// spread towards zero.
	m := New()
	m.Observe(1, time.Millisecond)
	m.Observe(1, 3*time.Millisecond)
	for range 200 {
		m.Observe(1, 2*time.Millisecond)
	}
	if got := m.Points()[0].StdMS; got > 0.01 {
		t.Errorf("std after a steady run %v ms", got)
	}
}

func TestRecentQuantiles(t *testing.T) {
	m := New()
	// 1..100 ms, nearest rank: p50 is the 50th smallest, p99 the 99th.
	for i := 100; i >= 1; i-- {
		m.Observe(4, time.Duration(i)*time.Millisecond)
	}
	p := m.Points()[0]
	if math.Abs(p.P50MS-50) > 1e-3 || math.Abs(p.P99MS-99) > 1e-3 {
		t.Errorf("p50 %v p99 %v, want 50 and 99", p.P50MS, p.P99MS)
	}
	// Past Window observations only the recent ones count.
	for range Window {
		m.Observe(4, 2*time.Millisecond)
	}
	if p := m.Points()[0]; math.Abs(p.P50MS-2) > 1e-3 || math.Abs(p.P99MS-2) > 1e-3 {
		t.Errorf("after a window of 2 ms: p50 %v p99 %v", p.P50MS, p.P99MS)
	}
	for i := range 10 {
		m.ObserveOverhead(4, time.Duration(i+1)*time.Millisecond)
	}
	m.ObserveOverhead(0, 20*time.Millisecond) // size unknown: the total only
	if o := m.Overhead(); o.Count != 11 || math.Abs(o.P50MS-6) > 1e-3 || math.Abs(o.P99MS-20) > 1e-3 {
		t.Errorf("overhead %+v", o)
	}
	// By batch size: only size 4's requests.
	if p := m.Points()[0]; math.Abs(p.OverheadP50MS-5) > 1e-3 || math.Abs(p.OverheadP99MS-10) > 1e-3 {
		t.Errorf("size 4 overhead p50 %v p99 %v, want 5 and 10", p.OverheadP50MS, p.OverheadP99MS)
	}
}
