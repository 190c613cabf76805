package planner

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/infergate/infergate/internal/perfmodel"
)

// linearProfile has p50(n) = 1 ms + 0.1 ms x n at batch sizes 1..64
// (powers of two) and p99 = p99Factor x p50; 1 instance, measured alone.
func linearProfile(p99Factor float64) *Profile {
	p := &Profile{Model: "fake"}
	for n := 1; n <= 64; n *= 2 {
		p50 := time.Millisecond + time.Duration(n)*100*time.Microsecond
		p.Points = append(p.Points, Point{
			BatchSize: n, Instances: 1, Threads: 1,
			P50: p50, P99: time.Duration(float64(p50) * p99Factor),
		})
	}
	return p
}

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func TestProfileLatency(t *testing.T) {
	p := linearProfile(1.2)
	sparse := &Profile{Points: []Point{{BatchSize: 4, P50: ms(2), P99: ms(4)}, {BatchSize: 8, P50: ms(3), P99: ms(5)}}}
	tests := []struct {
		name     string
		p        *Profile
		n        int
		p50, p99 time.Duration
	}{
		{"measured", p, 8, ms(1.8), ms(1.8 * 1.2)},
		{"interpolated", p, 3, ms(1.3), ms(1.3 * 1.2)},
		{"extrapolated per item", p, 128, ms(7.4 * 2), ms(7.4 * 1.2 * 2)},
		{"below smallest, per item", sparse, 3, ms(1.5), ms(3)},
		{"below smallest, floor at half", sparse, 1, ms(1), ms(2)},
		{"between sparse", sparse, 6, ms(2.5), ms(4.5)},
		{"zero", p, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p50, p99 := tt.p.Latency(tt.n)
			if d := p50 - tt.p50; d < -1 || d > 1 {
				t.Errorf("p50 = %v, want %v", p50, tt.p50)
			}
			if d := p99 - tt.p99; d < -1 || d > 1 {
				t.Errorf("p99 = %v, want %v", p99, tt.p99)
			}
		})
	}
}

func TestProfileValidate(t *testing.T) {
	bad := []*Profile{
		nil,
		{},
		{Points: []Point{{BatchSize: 2, P50: ms(1)}, {BatchSize: 1, P50: ms(1)}}},
		{Points: []Point{{BatchSize: 1, P50: 0}}},
		{Points: []Point{{BatchSize: 1, P50: ms(1), Instances: 1}, {BatchSize: 2, P50: ms(1), Instances: 2}}},
	}
	for i, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("profile %d: no error", i)
		}
	}
	if err := linearProfile(1.2).Validate(); err != nil {
		t.Error(err)
	}
}

func poisson(t testing.TB, rate float64, d time.Duration, seed uint64) []time.Duration {
	t.Helper()
	arr, err := Workload{Pattern: PatternPoisson, Rate: rate, Duration: d, Seed: seed}.Arrivals()
	if err != nil {
		t.Fatal(err)
	}
	return arr
}

func within(t *testing.T, what string, got, want, rel float64) {
	t.Helper()
	if math.Abs(got-want) > rel*math.Abs(want) {
		t.Errorf("%s = %.6g, want %.6g within %.0f%%", what, got, want, rel*100)
	}
}

func TestSimulateLowRateSingle(t *testing.T) {
	p := linearProfile(1.2)
	const rate, price = 100.0, 2.5
	arr := poisson(t, rate, 200*time.Second, 7)
	s := Settings{Mode: ModeRealtime, Policy: PolicySingle, Instances: 1}
	r := Simulate(p, arr, s, 10*time.Millisecond, price, 3)

	svc50, svc99 := p.Latency(1)
	within(t, "p50", float64(r.P50), float64(svc50), 0.10)
	if r.P99 < svc99*95/100 {
		t.Errorf("p99 %v below the service p99 %v", r.P99, svc99)
	}
	within(t, "throughput", r.ThroughputRPS, rate, 0.05)
	within(t, "throughput vs offered", r.ThroughputRPS, r.OfferedRPS, 0.01)
	sigma := math.Log(1.2) / z99
	meanSvc := svc50.Seconds() * math.Exp(sigma*sigma/2)
	within(t, "utilization", r.Utilization, rate*meanSvc/1, 0.05)
	if r.AvgBatch != 1 || r.Batches != len(arr) {
		t.Errorf("avg batch %v over %d batches, want 1 over %d", r.AvgBatch, r.Batches, len(arr))
	}
	if !r.MeetsSLO || r.SLOAttainment != 1 {
		t.Errorf("meets %v attainment %v, want true 1", r.MeetsSLO, r.SLOAttainment)
	}
	checkCostFormulas(t, r, price)

	// Deterministic for a seed; another seed draws other service times.
	if again := Simulate(p, arr, s, 10*time.Millisecond, price, 3); again != r {
		t.Errorf("same seed, different results:\n%+v\n%+v", r, again)
	}
	if other := Simulate(p, arr, s, 10*time.Millisecond, price, 4); other.Busy == r.Busy {
		t.Errorf("different seeds, same busy time %v", r.Busy)
	}
}

// checkCostFormulas checks the cost figures against the simulated times.
func checkCostFormulas(t *testing.T, r Result, price float64) {
	t.Helper()
	n := float64(r.Requests)
	loaded := float64(r.Settings.Instances) * r.Span.Hours() * price / n * 1000
	if r.Settings.Mode == ModeBatch {
		loaded = r.Busy.Hours() * price / n * 1000
	}
	if r.CostPer1k != loaded {
		t.Errorf("CostPer1k = %v, want %v", r.CostPer1k, loaded)
	}
	if busy := r.Busy.Hours() * price / n * 1000; r.CostPer1kBusy != busy {
		t.Errorf("CostPer1kBusy = %v, want %v", r.CostPer1kBusy, busy)
	}
	if month := r.CostPer1k / 1000 * r.OfferedRPS * 30 * 86400; math.Abs(r.CostPerMonth-month) > 1e-12*month {
		t.Errorf("CostPerMonth = %v, want %v", r.CostPerMonth, month)
	}
	if r.Settings.Mode != ModeBatch {
		if u := r.Busy.Seconds() / (float64(r.Settings.Instances) * r.Span.Seconds()); r.Utilization != u {
			t.Errorf("Utilization = %v, want %v", r.Utilization, u)
		}
		// Loaded cost is busy cost over utilization.
		within(t, "busy/loaded", r.CostPer1kBusy/r.CostPer1k, r.Utilization, 1e-9)
	}
}

func TestSimulateHybridHighLoad(t *testing.T) {
	p := linearProfile(1.2)
	arr := poisson(t, 4000, 10*time.Second, 11)
	s := Settings{Mode: ModeHybrid, Policy: PolicyHybrid, MaxBatchSize: 16, MaxQueueDelay: 20 * time.Millisecond, Instances: 1}
	r := Simulate(p, arr, s, time.Second, 1, 1)
	if r.AvgBatch < 0.95*16 || r.AvgBatch > 16 {
		t.Errorf("avg batch %.2f, want near 16", r.AvgBatch)
	}
	within(t, "throughput", r.ThroughputRPS, 4000, 0.05)
	checkCostFormulas(t, r, 1)

	// Single at the same load is past one instance's capacity (909/s):
	// the queue grows, and the span stretches to the work's busy time.
	single := Simulate(p, arr, Settings{Mode: ModeRealtime, Policy: PolicySingle, Instances: 1}, time.Second, 1, 1)
	if single.MeetsSLO || single.Utilization < 0.99 {
		t.Errorf("overloaded single: meets %v, utilization %v", single.MeetsSLO, single.Utilization)
	}
}

// TestPolicySemantics checks exact latencies with constant service times:
// batch of n takes 1 ms + 0.1 ms x n.
func TestPolicySemantics(t *testing.T) {
	p := linearProfile(1) // p99 == p50: no variance
	tests := []struct {
		name     string
		s        Settings
		slo      time.Duration
		arrivals []float64 // ms
		want     []float64 // latency per request, ms
		batches  int
		// final leaves out the arrival at 1 s that the other cases end
		// with, so that the queue is not flushed at close (after the last
		// arrival) before their policies fire.
		final bool
	}{
		{
			name:     "single queues behind one instance",
			s:        Settings{Policy: PolicySingle, Instances: 1},
			arrivals: []float64{0, 0, 0, 5},
			want:     []float64{1.1, 2.2, 3.3, 1.1},
			batches:  4,
		},
		{
			name:     "single on two instances",
			s:        Settings{Policy: PolicySingle, Instances: 2},
			arrivals: []float64{0, 0, 0},
			want:     []float64{1.1, 1.1, 2.2},
			batches:  3,
		},
		{
			// Fires at the 2 ms delay with 3; then a full batch of 4 at
			// once; the fifth waits for the worker, then for its delay.
			name:     "hybrid delay and full batch",
			s:        Settings{Policy: PolicyHybrid, MaxBatchSize: 4, MaxQueueDelay: ms(2), Instances: 1},
			arrivals: []float64{0, 0.5, 1, 10, 10, 10, 10, 10},
			want:     []float64{3.3, 2.8, 2.3, 1.4, 1.4, 1.4, 1.4, 3.1},
			batches:  3,
		},
		{
			// A worker that frees up while a full batch is queued takes
			// it at once.
			name:     "hybrid busy worker takes max batch",
			s:        Settings{Policy: PolicyHybrid, MaxBatchSize: 2, MaxQueueDelay: ms(50), Instances: 1},
			arrivals: []float64{0, 0, 0.1, 0.2, 0.3},
			want:     []float64{1.2, 1.2, 2.3, 2.2, 51.1},
			batches:  3,
		},
		{
			name:     "time ticks every 5 ms",
			s:        Settings{Policy: PolicyTime, BatchTimeout: ms(5), MaxBatchSize: 32, Instances: 1},
			arrivals: []float64{0, 1, 4, 7},
			want:     []float64{6.3, 5.3, 2.3, 4.1},
			batches:  2,
		},
		{
			// After a batch, the tick moves to the first after it fired:
			// the second request waits for the 10 ms tick.
			name:     "time with max batch 1",
			s:        Settings{Policy: PolicyTime, BatchTimeout: ms(5), MaxBatchSize: 1, Instances: 1},
			arrivals: []float64{0, 1},
			want:     []float64{6.1, 10.1},
			batches:  2,
		},
		{
			// Full batch of 3 at 2 ms; a lone request fires on deadline
			// pressure at 20 + 10 - 1.1 - 0.275 - 1 ms.
			name:     "size full batch and deadline",
			s:        Settings{Policy: PolicySize, MaxBatchSize: 3, Instances: 1},
			slo:      ms(10),
			arrivals: []float64{0, 1, 2, 20},
			want:     []float64{3.3, 2.3, 1.3, 8.725},
			batches:  2,
		},
		{
			name:     "close flushes a partial batch after the last arrival",
			s:        Settings{Policy: PolicySize, MaxBatchSize: 3, Instances: 1},
			arrivals: []float64{0, 1},
			want:     []float64{2.2, 1.2},
			batches:  1,
			final:    true,
		},
		{
			name:     "close flushes hybrid too",
			s:        Settings{Policy: PolicyHybrid, MaxBatchSize: 8, MaxQueueDelay: ms(50), Instances: 1},
			arrivals: []float64{0, 0.5, 0.5},
			want:     []float64{1.8, 1.3, 1.3},
			batches:  1,
			final:    true,
		},
		{
			name:     "hybrid fires on deadline pressure before its delay",
			s:        Settings{Policy: PolicyHybrid, MaxBatchSize: 8, MaxQueueDelay: ms(50), Instances: 1},
			slo:      ms(10),
			arrivals: []float64{0},
			want:     []float64{8.725},
			batches:  1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.Mode = ModeRealtime
			arrivals, batches := tt.arrivals, tt.batches
			if !tt.final {
				arrivals, batches = append(slices.Clip(arrivals), 1000), batches+1
			}
			arr := make([]time.Duration, len(arrivals))
			for i, a := range arrivals {
				arr[i] = ms(a)
			}
			lat := make([]time.Duration, len(arr))
			s := tt.s.withDefaults(p)
			out := simulateOnline(p, arr, s, tt.slo, nil, lat, make([]int32, len(arr)))
			for i := range tt.want {
				if d := lat[i] - ms(tt.want[i]); d < -2 || d > 2 {
					t.Errorf("request %d (at %v ms): latency %v, want %v ms", i, tt.arrivals[i], lat[i], tt.want[i])
				}
			}
			if out.batches != batches {
				t.Errorf("%d batches, want %d", out.batches, batches)
			}
			// The public entry point agrees.
			r := Simulate(p, arr, tt.s, tt.slo, 1, 1)
			sorted := slices.Sorted(slices.Values(lat))
			if r.P50 != quantile(sorted, 0.5) || r.P99 != quantile(sorted, 0.99) || r.Batches != batches {
				t.Errorf("Simulate: p50 %v p99 %v batches %d", r.P50, r.P99, r.Batches)
			}
		})
	}
}

func TestSimulateBatchMode(t *testing.T) {
	p := linearProfile(1)
	t.Run("windows", func(t *testing.T) {
		arr := []time.Duration{0, 30 * time.Minute, time.Hour + time.Second}
		s := Settings{Mode: ModeBatch, Window: time.Hour, Instances: 1}
		r := Simulate(p, arr, s, 2*time.Hour, 3, 1)
		// Window 1 ends at 1h: a batch of 2 (1.2 ms). Window 2 at 2h: 1.
		want := []time.Duration{time.Hour + ms(1.2), 30*time.Minute + ms(1.2), time.Hour - time.Second + ms(1.1)}
		if r.P99 != want[0] || r.P50 != want[2] {
			t.Errorf("p50 %v p99 %v, want %v %v", r.P50, r.P99, want[2], want[0])
		}
		if r.Busy != ms(2.3) || r.Batches != 2 || r.Settings.MaxBatchSize != 64 {
			t.Errorf("busy %v batches %d size %d", r.Busy, r.Batches, r.Settings.MaxBatchSize)
		}
		if r.CostPer1k != r.CostPer1kBusy || r.Utilization != 1 {
			t.Errorf("batch cost loaded %v busy %v utilization %v", r.CostPer1k, r.CostPer1kBusy, r.Utilization)
		}
		checkCostFormulas(t, r, 3)
	})
	t.Run("back to back on instances", func(t *testing.T) {
		arr := make([]time.Duration, 130)
		s := Settings{Mode: ModeBatch, Window: time.Hour, Instances: 2}
		r := Simulate(p, arr, s, 2*time.Hour, 1, 1)
		// 64 and 64 in parallel (7.4 ms), then 2 (1.2 ms) after them.
		if r.P99 != time.Hour+ms(8.6) || r.P50 != time.Hour+ms(7.4) || r.Batches != 3 {
			t.Errorf("p50 %v p99 %v batches %d", r.P50, r.P99, r.Batches)
		}
		if r.MeetsSLO != true {
			t.Error("should meet a 2h SLO")
		}
	})
}

func TestSimulateEdgeCases(t *testing.T) {
	p := linearProfile(1.2)
	if r := Simulate(p, nil, Settings{Mode: ModeRealtime}, ms(10), 1, 1); r.Requests != 0 || r.MeetsSLO {
		t.Errorf("empty arrivals: %+v", r)
	}
	// Defaults: hybrid policy at the profile's largest size, 1 instance.
	r := Simulate(p, []time.Duration{0}, Settings{Mode: ModeHybrid}, 0, 1, 1)
	if r.Settings.Policy != PolicyHybrid || r.Settings.MaxBatchSize != 64 || r.Settings.Instances != 1 || !r.MeetsSLO {
		t.Errorf("defaults: %+v", r.Settings)
	}
	for _, s := range []Settings{{Mode: "x"}, {Mode: ModeHybrid, Policy: "y"}, {Mode: ModeHybrid, Policy: PolicyTime}, {Mode: ModeBatch, Window: -1}} {
		if s.Validate() == nil {
			t.Errorf("%+v: no error", s)
		}
	}
}

// TestSimulateLarge runs 100k arrivals on every policy; the benchmark
// below measures how fast.
func TestSimulateLarge(t *testing.T) {
	p := linearProfile(1.2)
	arr := poisson(t, 5000, 20*time.Second, 5)
	for _, s := range []Settings{
		{Mode: ModeRealtime, Policy: PolicySingle, Instances: 8},
		{Mode: ModeHybrid, Policy: PolicyHybrid, MaxBatchSize: 32, MaxQueueDelay: ms(5), Instances: 2},
		{Mode: ModeHybrid, Policy: PolicyTime, MaxBatchSize: 32, BatchTimeout: ms(5), Instances: 2},
		{Mode: ModeHybrid, Policy: PolicySize, MaxBatchSize: 32, Instances: 2},
		{Mode: ModeBatch, Window: time.Hour, Instances: 1},
	} {
		r := Simulate(p, arr, s, ms(50), 1, 1)
		if r.Requests != len(arr) || r.P99 < r.P50 || r.Busy <= 0 {
			t.Errorf("%v: %+v", s, r)
		}
	}
}

func BenchmarkSimulate100k(b *testing.B) {
	p := linearProfile(1.2)
	arr := poisson(b, 5000, 20*time.Second, 5)
	s := Settings{Mode: ModeHybrid, Policy: PolicyHybrid, MaxBatchSize: 32, MaxQueueDelay: ms(5), Instances: 2}
	for b.Loop() {
		Simulate(p, arr, s, ms(50), 1, 1)
	}
}

func TestOverheadAddsToLatencyOnly(t *testing.T) {
	p := &Profile{Points: []Point{{BatchSize: 1, Instances: 1, Threads: 1, P50: time.Millisecond, P99: time.Millisecond}}}
	arr := []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond}
	s := Settings{Mode: ModeRealtime, Policy: PolicySingle, Instances: 1}
	base := Simulate(p, arr, s, 0, 1, 1)
	p.Overhead.P50, p.Overhead.P99 = 2*time.Millisecond, 2*time.Millisecond
	with := Simulate(p, arr, s, 0, 1, 1)
	if with.P50-base.P50 != 2*time.Millisecond || with.P99-base.P99 != 2*time.Millisecond {
		t.Errorf("p50 %v -> %v, p99 %v -> %v: want +2ms each", base.P50, with.P50, base.P99, with.P99)
	}
	if with.Busy != base.Busy || with.CostPer1k != base.CostPer1k {
		t.Errorf("overhead changed busy time or cost: %v %v -> %v %v", base.Busy, base.CostPer1k, with.Busy, with.CostPer1k)
	}
}

func TestFromLive(t *testing.T) {
	p := FromLive("m", 2, []perfmodel.Point{{BatchSize: 1, MeanMS: 2}, {BatchSize: 8, MeanMS: 4, StdMS: 1}, {BatchSize: 9}},
		perfmodel.Overhead{Count: 10, MeanMS: 1, StdMS: 0.5}, perfmodel.Overhead{Count: 4, MeanMS: 0.2, P50MS: 0.1, P99MS: 0.9})
	if len(p.Points) != 2 || p.Validate() != nil {
		t.Fatalf("points %+v: %v", p.Points, p.Validate())
	}
	// Zero spread: median = p99 = mean.
	if p.Points[0].P50 != 2*time.Millisecond || p.Points[0].P99 != 2*time.Millisecond || p.Points[0].ItemsPerSec != 1000 {
		t.Errorf("batch 1: %+v", p.Points[0])
	}
	// Mean 4, std 1: cv^2 = 1/16, median 4/sqrt(1.0625) = 3.8806 ms, p99 above the mean.
	if got := p.Points[1].P50; got < 3880*time.Microsecond || got > 3881*time.Microsecond || p.Points[1].P99 <= 4*time.Millisecond {
		t.Errorf("batch 8: %+v", p.Points[1])
	}
	if p.Overhead.P50 <= 0 || p.Overhead.P99 <= p.Overhead.P50 {
		t.Errorf("overhead %+v", p.Overhead)
	}
	// Measured quantiles win over the moments.
	if p.Dispatch.P50 != 100*time.Microsecond || p.Dispatch.P99 != 900*time.Microsecond {
		t.Errorf("dispatch %+v", p.Dispatch)
	}
}

func TestFromLiveShrinksSparseSpreads(t *testing.T) {
	sigma := func(pt Point) float64 { return math.Log(float64(pt.P99)/float64(pt.P50)) / z99 }
	tests := []struct {
		name         string
		sparseCount  int64
		lo, hi       float64 // the sparse size's spread after shrinking
		fullLo, full float64 // the full window's
	}{
		// 512 samples at spread 0.1 and 64 at 0.5: pooled RMS
		// sqrt((512*0.01+64*0.25)/576) = 0.1915; the sparse size gets
		// (64*0.5+256*0.1915)/320 = 0.253, the full one
		// (512*0.1+256*0.1915)/768 = 0.130.
		{"sparse", 64, 0.252, 0.254, 0.129, 0.131},
		// Both full: pooled sqrt((0.01+0.25)/2) = 0.3606; sizes move a
		// third of the way toward it.
		{"full", 512, 0.453, 0.455, 0.186, 0.188},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p50 := 4.0
			pts := []perfmodel.Point{
				{BatchSize: 8, Count: 10000, MeanMS: p50, P50MS: p50, P99MS: p50 * math.Exp(z99*0.1)},
				{BatchSize: 16, Count: tc.sparseCount, MeanMS: 2 * p50, P50MS: 2 * p50, P99MS: 2 * p50 * math.Exp(z99*0.5)},
			}
			p := FromLive("m", 1, pts, perfmodel.Overhead{}, perfmodel.Overhead{})
			if got := sigma(p.Points[1]); got < tc.lo || got > tc.hi {
				t.Errorf("sparse size spread %.4f, want [%v, %v]", got, tc.lo, tc.hi)
			}
			if got := sigma(p.Points[0]); got < tc.fullLo || got > tc.full {
				t.Errorf("full size spread %.4f, want [%v, %v]", got, tc.fullLo, tc.full)
			}
			if p.Points[1].P50 != 8*time.Millisecond {
				t.Errorf("median moved: %v", p.Points[1].P50)
			}
		})
	}
}

func TestOverheadBySize(t *testing.T) {
	// Requests 0 and 1 arrive together and run as one batch of 2; request
	// 2 runs alone. Size 2's overhead is 5 ms, the profile's 1 ms; size 1
	// has none of its own, so its nearest measured size (2) applies.
	tests := []struct {
		name string
		pts  []Point
		want []time.Duration // added to each request
	}{
		{"profile overhead only", []Point{
			{BatchSize: 1, Instances: 1, Threads: 1, P50: time.Millisecond, P99: time.Millisecond},
			{BatchSize: 2, Instances: 1, Threads: 1, P50: time.Millisecond, P99: time.Millisecond}},
			[]time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}},
		{"by size", []Point{
			{BatchSize: 1, Instances: 1, Threads: 1, P50: time.Millisecond, P99: time.Millisecond},
			{BatchSize: 2, Instances: 1, Threads: 1, P50: time.Millisecond, P99: time.Millisecond, OverheadP50: 5 * time.Millisecond, OverheadP99: 5 * time.Millisecond}},
			[]time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}},
		{"each size its own", []Point{
			{BatchSize: 1, Instances: 1, Threads: 1, P50: time.Millisecond, P99: time.Millisecond, OverheadP50: 2 * time.Millisecond, OverheadP99: 2 * time.Millisecond},
			{BatchSize: 2, Instances: 1, Threads: 1, P50: time.Millisecond, P99: time.Millisecond, OverheadP50: 5 * time.Millisecond, OverheadP99: 5 * time.Millisecond}},
			[]time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 2 * time.Millisecond}},
	}
	arr := []time.Duration{0, 0, 50 * time.Millisecond}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Profile{Points: tt.pts}
			p.Overhead.P50, p.Overhead.P99 = time.Millisecond, time.Millisecond
			lat := make([]time.Duration, len(arr))
			size := make([]int32, len(arr))
			s := Settings{Mode: ModeHybrid, Policy: PolicySize, MaxBatchSize: 2, Instances: 1}.withDefaults(p)
			simulateOnline(p, arr, s, 0, nil, lat, size)
			base := slices.Clone(lat)
			addOverhead(p, lat, size, rand.New(rand.NewPCG(1, 2)))
			for i := range lat {
				if got := lat[i] - base[i]; got != tt.want[i] {
					t.Errorf("request %d (batch of %d): overhead %v, want %v", i, size[i], got, tt.want[i])
				}
			}
		})
	}
}

func TestClientPathAddsToLatencyOnly(t *testing.T) {
	p := &Profile{Points: []Point{{BatchSize: 1, Instances: 1, Threads: 1, P50: time.Millisecond, P99: time.Millisecond}}}
	arr := []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond}
	s := Settings{Mode: ModeRealtime, Policy: PolicySingle, Instances: 1}
	base := Simulate(p, arr, s, 0, 1, 1)
	p.ClientPath.P50, p.ClientPath.P99 = 3*time.Millisecond, 3*time.Millisecond
	with := Simulate(p, arr, s, 0, 1, 1)
	if with.P50-base.P50 != 3*time.Millisecond || with.P99-base.P99 != 3*time.Millisecond {
		t.Errorf("p50 %v -> %v, p99 %v -> %v: want +3ms each", base.P50, with.P50, base.P99, with.P99)
	}
	if with.Busy != base.Busy || with.ThroughputRPS != base.ThroughputRPS {
		t.Errorf("the client path changed busy time or throughput")
	}
}

func TestDispatchDelaysTimerFiredBatchesOnly(t *testing.T) {
	// The last arrival is flushed at once (the server closes); the
	// others wait for the hybrid timer.
	arr := []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond}
	tests := []struct {
		name string
		s    Settings
		want time.Duration // added to p50
	}{
		{"hybrid fires on its timer", Settings{Mode: ModeHybrid, Policy: PolicyHybrid, MaxBatchSize: 8, MaxQueueDelay: time.Millisecond, Instances: 1}, 500 * time.Microsecond},
		{"single fires on arrival", Settings{Mode: ModeRealtime, Policy: PolicySingle, Instances: 1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Profile{Points: []Point{{BatchSize: 1, Instances: 1, Threads: 1, P50: time.Millisecond, P99: time.Millisecond}}}
			base := Simulate(p, arr, tt.s, 0, 1, 1)
			p.Dispatch.P50, p.Dispatch.P99 = 500*time.Microsecond, 500*time.Microsecond
			with := Simulate(p, arr, tt.s, 0, 1, 1)
			if with.P50-base.P50 != tt.want || with.Busy != base.Busy {
				t.Errorf("p50 %v -> %v, busy %v -> %v: want +%v and the same busy time", base.P50, with.P50, base.Busy, with.Busy, tt.want)
			}
		})
	}
}
