package cost

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// approx reports whether got is want up to floating-point rounding.
func approx(got, want float64) bool {
	return math.Abs(got-want) <= 1e-12*math.Max(1, math.Max(math.Abs(got), math.Abs(want)))
}

func checkF(t *testing.T, what string, got, want float64) {
	t.Helper()
	if !approx(got, want) {
		t.Errorf("%s = %.15g, want %.15g", what, got, want)
	}
}

func checkPtr(t *testing.T, what string, got *float64, want *float64) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil:
		t.Errorf("%s = nil, want %.15g", what, *want)
	case want == nil:
		t.Errorf("%s = %.15g, want nil", what, *got)
	default:
		checkF(t, what, *got, *want)
	}
}

func ptr(f float64) *float64 { return &f }

func lineOf(t *testing.T, r Report, model, class, mode string) Line {
	t.Helper()
	for _, l := range r.Lines {
		if l.Model == model && l.Class == class && l.Mode == mode {
			return l
		}
	}
	t.Fatalf("no line %s/%s/%s in %+v", model, class, mode, r.Lines)
	return Line{}
}

func modelOf(t *testing.T, r Report, model string) ModelReport {
	t.Helper()
	for _, m := range r.Models {
		if m.Model == model {
			return m
		}
	}
	t.Fatalf("no model %s in %+v", model, r.Models)
	return ModelReport{}
}

var (
	urgentRT  = func(req, items int) Share { return Share{infergate.ClassUrgent, infergate.ModeRealtime, req, items} }
	normalHy  = func(req, items int) Share { return Share{infergate.ClassNormal, infergate.ModeHybrid, req, items} }
	bulkBatch = func(req, items int) Share { return Share{infergate.ClassBulk, infergate.ModeBatch, req, items} }
)

// step sets the instances of model "m" to n at t0+at.
type step struct {
	at time.Duration
	n  int
}

func TestProvisionedIntegratesInstanceChanges(t *testing.T) {
	tests := []struct {
		name          string
		steps         []step
		reportAt      time.Duration
		wantProv      float64
		wantInstances int
	}{
		{
			name:     "1 then 2",
			steps:    []step{{0, 1}, {10 * time.Second, 2}},
			reportAt: 20 * time.Second, wantProv: 30, wantInstances: 2,
		},
		{
			name:     "scale to zero stops accruing",
			steps:    []step{{0, 3}, {5 * time.Second, 0}},
			reportAt: time.Minute, wantProv: 15, wantInstances: 0,
		},
		{
			name:     "set late",
			steps:    []step{{30 * time.Second, 4}},
			reportAt: 40 * time.Second, wantProv: 40, wantInstances: 4,
		},
		{
			name:     "same count twice",
			steps:    []step{{0, 2}, {1 * time.Second, 2}, {2500 * time.Millisecond, 1}},
			reportAt: 4 * time.Second, wantProv: 2*2.5 + 1.5, wantInstances: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			l := New(clk, 3.6)
			for _, s := range tc.steps {
				clk.Advance(t0.Add(s.at).Sub(clk.Now()))
				l.SetInstances("m", s.n)
			}
			clk.Advance(t0.Add(tc.reportAt).Sub(clk.Now()))
			r := l.Report()
			m := modelOf(t, r, "m")
			checkF(t, "ProvisionedSeconds", m.ProvisionedSeconds, tc.wantProv)
			if m.Instances != tc.wantInstances {
				t.Errorf("Instances = %d, want %d", m.Instances, tc.wantInstances)
			}
			checkF(t, "WindowSeconds", r.WindowSeconds, tc.reportAt.Seconds())
			checkF(t, "IdleCostUSD", m.IdleCostUSD, tc.wantProv*3.6/3600)
			if m.Utilization != 0 || m.BusySeconds != 0 {
				t.Errorf("no batches, got utilization %g busy %g", m.Utilization, m.BusySeconds)
			}
		})
	}
}

// TestReportFigures runs one scenario and checks every figure against
// numbers worked out by hand. Price 36/h is 0.01 per second.
//
//	t0     SetInstances(1)
//	t0+10s SetInstances(2)
//	t0+20s report: provisioned 10*1 + 10*2 = 30 s
//
// batch A: busy 4 s, urgent 1 req/1 item, normal 1 req/3 items, batch1 2 s
// batch B: busy 2 s, normal 2 req/2 items, batch1 1.5 s
//
// urgent: busy 4*1/4 = 1 s, one-by-one 1*2 = 2 s
// normal: busy 4*3/4 + 2 = 5 s, one-by-one 3*2 + 2*1.5 = 9 s
// model: busy 6 s, idle 24 s, 4 idle seconds per busy second.
func TestReportFigures(t *testing.T) {
	clk := clock.NewFake(t0)
	l := New(clk, 36)
	l.SetInstances("m", 1)
	clk.Advance(10 * time.Second)
	l.SetInstances("m", 2)
	l.RecordBatch("m", 4*time.Second, []Share{urgentRT(1, 1), normalHy(1, 3)}, 2*time.Second)
	clk.Advance(5 * time.Second)
	l.RecordBatch("m", 2*time.Second, []Share{normalHy(2, 2)}, 1500*time.Millisecond)
	clk.Advance(5 * time.Second)
	r := l.Report()

	checkF(t, "PricePerInstanceHour", r.PricePerInstanceHour, 36)
	checkF(t, "WindowSeconds", r.WindowSeconds, 20)

	m := modelOf(t, r, "m")
	checkF(t, "model ProvisionedSeconds", m.ProvisionedSeconds, 30)
	checkF(t, "model BusySeconds", m.BusySeconds, 6)
	checkF(t, "model Utilization", m.Utilization, 0.2)
	checkF(t, "model BusyCostUSD", m.BusyCostUSD, 0.06)
	checkF(t, "model IdleCostUSD", m.IdleCostUSD, 0.24)
	if m.Batches != 2 || m.Items != 6 || m.Instances != 2 {
		t.Errorf("model batches/items/instances = %d/%d/%d, want 2/6/2", m.Batches, m.Items, m.Instances)
	}

	tests := []struct {
		class, mode      string
		requests, items  int64
		batches          int64
		avgBatch         float64
		busy, cost       float64
		per1kBusy        float64
		per1kLoaded      float64
		oneByOne, saving *float64
	}{
		{
			class: "urgent", mode: "realtime", requests: 1, items: 1, batches: 1, avgBatch: 1,
			busy: 1, cost: 0.01, per1kBusy: 10, per1kLoaded: 50, // 0.01 * (1+4) per request
			oneByOne: ptr(0.02), saving: ptr(0.5),
		},
		{
			class: "normal", mode: "hybrid", requests: 3, items: 5, batches: 2, avgBatch: 2.5,
			busy: 5, cost: 0.05, per1kBusy: 0.05 / 3 * 1000, per1kLoaded: 0.05 * 5 / 3 * 1000,
			oneByOne: ptr(0.09), saving: ptr(1 - 5.0/9),
		},
	}
	if len(r.Lines) != len(tests) {
		t.Fatalf("got %d lines, want %d: %+v", len(r.Lines), len(tests), r.Lines)
	}
	loaded := 0.0
	for _, tc := range tests {
		t.Run(tc.class, func(t *testing.T) {
			ln := lineOf(t, r, "m", tc.class, tc.mode)
			if ln.Requests != tc.requests || ln.Items != tc.items || ln.Batches != tc.batches {
				t.Errorf("requests/items/batches = %d/%d/%d, want %d/%d/%d",
					ln.Requests, ln.Items, ln.Batches, tc.requests, tc.items, tc.batches)
			}
			checkF(t, "AvgBatchSize", ln.AvgBatchSize, tc.avgBatch)
			checkF(t, "BusySeconds", ln.BusySeconds, tc.busy)
			checkF(t, "CostUSD", ln.CostUSD, tc.cost)
			checkF(t, "CostPer1kBusy", ln.CostPer1kBusy, tc.per1kBusy)
			checkF(t, "CostPer1kLoaded", ln.CostPer1kLoaded, tc.per1kLoaded)
			checkPtr(t, "OneByOneCostUSD", ln.OneByOneCostUSD, tc.oneByOne)
			checkPtr(t, "Saving", ln.Saving, tc.saving)
		})
		ln := lineOf(t, r, "m", tc.class, tc.mode)
		loaded += ln.CostPer1kLoaded * float64(ln.Requests) / 1000
	}
	// Loaded cost shares out all of the model's provisioned cost.
	checkF(t, "sum of loaded line costs", loaded, m.BusyCostUSD+m.IdleCostUSD)
}

func TestBusyAttribution(t *testing.T) {
	tests := []struct {
		name   string
		busy   time.Duration
		shares []Share
		want   map[string]float64 // class -> busy seconds
	}{
		{"one class", 3 * time.Second, []Share{bulkBatch(2, 8)}, map[string]float64{"bulk": 3}},
		{"by items not requests", 4 * time.Second, []Share{urgentRT(3, 3), bulkBatch(1, 1)},
			map[string]float64{"urgent": 3, "bulk": 1}},
		{"three classes", 10 * time.Second, []Share{urgentRT(1, 1), normalHy(2, 4), bulkBatch(1, 5)},
			map[string]float64{"urgent": 1, "normal": 4, "bulk": 5}},
		{"request with no items gets no time", 2 * time.Second, []Share{urgentRT(1, 0), normalHy(1, 2)},
			map[string]float64{"urgent": 0, "normal": 2}},
		{"empty share skipped", 2 * time.Second, []Share{urgentRT(0, 0), normalHy(1, 2)},
			map[string]float64{"normal": 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := New(clock.NewFake(t0), 3600) // 1 USD per busy second
			l.RecordBatch("m", tc.busy, tc.shares, 0)
			r := l.Report()
			if len(r.Lines) != len(tc.want) {
				t.Fatalf("got %d lines, want %d: %+v", len(r.Lines), len(tc.want), r.Lines)
			}
			sum := 0.0
			for _, ln := range r.Lines {
				want, ok := tc.want[ln.Class]
				if !ok {
					t.Fatalf("unexpected line %+v", ln)
				}
				checkF(t, ln.Class+" BusySeconds", ln.BusySeconds, want)
				checkF(t, ln.Class+" CostUSD", ln.CostUSD, want)
				sum += ln.BusySeconds
			}
			checkF(t, "attributed busy", sum, tc.busy.Seconds())
			checkF(t, "model busy", modelOf(t, r, "m").BusySeconds, tc.busy.Seconds())
		})
	}
}

func TestEmptyBatchIgnored(t *testing.T) {
	for _, shares := range [][]Share{nil, {}, {urgentRT(0, 0)}, {urgentRT(2, 0)}} {
		l := New(clock.NewFake(t0), 1)
		l.RecordBatch("m", time.Second, shares, time.Second)
		if r := l.Report(); len(r.Lines) != 0 || len(r.Models) != 0 {
			t.Errorf("shares %+v: report %+v, want empty", shares, r)
		}
	}
}

func TestCostIsBusyTimesPrice(t *testing.T) {
	tests := []struct {
		price float64
		busy  time.Duration
		want  float64
	}{
		{3600, time.Second, 1},
		{0.10, time.Hour, 0.10},
		{0.10, 36 * time.Second, 0.001},
		{2.5, 90 * time.Minute, 3.75},
		{0, time.Hour, 0},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%g/h for %s", tc.price, tc.busy), func(t *testing.T) {
			l := New(clock.NewFake(t0), tc.price)
			if l.PricePerHour() != tc.price {
				t.Errorf("PricePerHour = %g", l.PricePerHour())
			}
			l.RecordBatch("m", tc.busy, []Share{normalHy(1, 1)}, 0)
			r := l.Report()
			checkF(t, "line CostUSD", r.Lines[0].CostUSD, tc.want)
			checkF(t, "model BusyCostUSD", r.Models[0].BusyCostUSD, tc.want)
			checkF(t, "CostPer1kBusy", r.Lines[0].CostPer1kBusy, tc.want*1000)
		})
	}
}

func TestUtilization(t *testing.T) {
	tests := []struct {
		name      string
		instances int
		window    time.Duration
		busy      []time.Duration
		want      float64
		wantIdle  float64 // seconds
	}{
		{"half", 1, 10 * time.Second, []time.Duration{2 * time.Second, 3 * time.Second}, 0.5, 5},
		{"two instances", 2, 10 * time.Second, []time.Duration{5 * time.Second}, 0.25, 15},
		{"idle", 1, 10 * time.Second, nil, 0, 10},
		// Busy beyond provisioned (a clock skew or an unprovisioned
		// model): utilization caps at 1 and idle at 0.
		{"capped", 1, 1 * time.Second, []time.Duration{3 * time.Second}, 1, 0},
		{"never provisioned", 0, 10 * time.Second, []time.Duration{time.Second}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			l := New(clk, 3600)
			if tc.instances > 0 {
				l.SetInstances("m", tc.instances)
			}
			for _, b := range tc.busy {
				l.RecordBatch("m", b, []Share{normalHy(1, 1)}, 0)
			}
			clk.Advance(tc.window)
			r := l.Report()
			m := modelOf(t, r, "m")
			checkF(t, "Utilization", m.Utilization, tc.want)
			checkF(t, "IdleCostUSD", m.IdleCostUSD, tc.wantIdle)
			if len(r.Lines) > 0 {
				// Loaded = busy * (1 + idle/busy) = busy + idle.
				ln := r.Lines[0]
				checkF(t, "loaded cost", ln.CostPer1kLoaded*float64(ln.Requests)/1000, m.BusyCostUSD+m.IdleCostUSD)
			}
		})
	}
}

func TestOneByOneBaseline(t *testing.T) {
	type batch struct {
		busy   time.Duration
		shares []Share
		batch1 time.Duration
	}
	tests := []struct {
		name         string
		price        float64
		batches      []batch
		class, mode  string
		wantOneByOne *float64
		wantSaving   *float64
	}{
		{
			name: "batch of 8 at a quarter of one-by-one", price: 3600,
			batches: []batch{{2 * time.Second, []Share{bulkBatch(8, 8)}, time.Second}},
			class:   "bulk", mode: "batch",
			wantOneByOne: ptr(8), wantSaving: ptr(0.75),
		},
		{
			name: "batch of one saves nothing", price: 3600,
			batches: []batch{{time.Second, []Share{urgentRT(1, 1)}, time.Second}},
			class:   "urgent", mode: "realtime",
			wantOneByOne: ptr(1), wantSaving: ptr(0),
		},
		{
			name: "slower than one-by-one is a negative saving", price: 3600,
			batches: []batch{{4 * time.Second, []Share{normalHy(2, 2)}, time.Second}},
			class:   "normal", mode: "hybrid",
			wantOneByOne: ptr(2), wantSaving: ptr(-1),
		},
		{
			name: "batch1 changes between batches", price: 36,
			batches: []batch{
				{time.Second, []Share{bulkBatch(4, 4)}, time.Second},            // one-by-one 4 s
				{time.Second, []Share{bulkBatch(4, 4)}, 500 * time.Millisecond}, // one-by-one 2 s
			},
			class: "bulk", mode: "batch",
			wantOneByOne: ptr(0.06), wantSaving: ptr(1 - 2.0/6),
		},
		{
			name: "share of a mixed batch", price: 3600,
			batches: []batch{{4 * time.Second, []Share{urgentRT(1, 1), bulkBatch(1, 7)}, time.Second}},
			class:   "bulk", mode: "batch",
			wantOneByOne: ptr(7), wantSaving: ptr(1 - 3.5/7),
		},
		{
			name: "batch1 unknown", price: 3600,
			batches: []batch{{time.Second, []Share{bulkBatch(4, 4)}, 0}},
			class:   "bulk", mode: "batch",
		},
		{
			name: "batch1 unknown for the first batch only", price: 3600,
			batches: []batch{
				{time.Second, []Share{bulkBatch(4, 4)}, 0},
				{time.Second, []Share{bulkBatch(4, 4)}, time.Second},
			},
			class: "bulk", mode: "batch",
		},
		{
			name: "batch1 unknown for the last batch only", price: 3600,
			batches: []batch{
				{time.Second, []Share{bulkBatch(4, 4)}, time.Second},
				{time.Second, []Share{bulkBatch(4, 4)}, 0},
			},
			class: "bulk", mode: "batch",
		},
		{
			name: "other line's unknown batch1 does not matter", price: 3600,
			batches: []batch{
				{time.Second, []Share{bulkBatch(4, 4)}, time.Second},
				{time.Second, []Share{urgentRT(1, 1)}, 0},
			},
			class: "bulk", mode: "batch",
			wantOneByOne: ptr(4), wantSaving: ptr(0.75),
		},
		{
			name: "zero price", price: 0,
			batches: []batch{{time.Second, []Share{bulkBatch(4, 4)}, time.Second}},
			class:   "bulk", mode: "batch",
			// Both costs are 0; the saving is still the ratio of
			// times, not 0/0.
			wantOneByOne: ptr(0), wantSaving: ptr(0.75),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := New(clock.NewFake(t0), tc.price)
			for _, b := range tc.batches {
				l.RecordBatch("m", b.busy, b.shares, b.batch1)
			}
			ln := lineOf(t, l.Report(), "m", tc.class, tc.mode)
			checkPtr(t, "OneByOneCostUSD", ln.OneByOneCostUSD, tc.wantOneByOne)
			checkPtr(t, "Saving", ln.Saving, tc.wantSaving)
			if ln.Saving != nil && *ln.OneByOneCostUSD > 0 {
				checkF(t, "Saving vs costs", *ln.Saving, 1-ln.CostUSD/(*ln.OneByOneCostUSD))
			}
			if _, err := json.Marshal(l.Report()); err != nil {
				t.Errorf("report does not encode as JSON: %v", err)
			}
		})
	}
}

func TestRequestsVersusItems(t *testing.T) {
	l := New(clock.NewFake(t0), 3600)
	// One client-side batch of 4 items, then a single-item request, in
	// separate batches.
	l.RecordBatch("m", 2*time.Second, []Share{bulkBatch(1, 4)}, time.Second)
	l.RecordBatch("m", time.Second, []Share{bulkBatch(1, 1)}, time.Second)
	ln := lineOf(t, l.Report(), "m", "bulk", "batch")
	if ln.Requests != 2 || ln.Items != 5 || ln.Batches != 2 {
		t.Errorf("requests/items/batches = %d/%d/%d, want 2/5/2", ln.Requests, ln.Items, ln.Batches)
	}
	checkF(t, "AvgBatchSize", ln.AvgBatchSize, 2.5)
	checkF(t, "CostUSD", ln.CostUSD, 3)
	// Per 1k requests, not items.
	checkF(t, "CostPer1kBusy", ln.CostPer1kBusy, 1500)
	// One-by-one is per item: 5 items at 1 s.
	checkPtr(t, "OneByOneCostUSD", ln.OneByOneCostUSD, ptr(5))
	checkPtr(t, "Saving", ln.Saving, ptr(0.4))
	if m := modelOf(t, l.Report(), "m"); m.Items != 5 || m.Batches != 2 {
		t.Errorf("model items/batches = %d/%d, want 5/2", m.Items, m.Batches)
	}
}

func TestReportOrdering(t *testing.T) {
	l := New(clock.NewFake(t0), 1)
	// Record in a scrambled order; the report sorts by model, then class
	// name, then mode name.
	l.RecordBatch("zeta", time.Second, []Share{urgentRT(1, 1)}, 0)
	l.RecordBatch("alpha", time.Second, []Share{urgentRT(1, 1), bulkBatch(1, 1)}, 0)
	l.RecordBatch("alpha", time.Second, []Share{{infergate.ClassBulk, infergate.ModeRealtime, 1, 1}}, 0)
	l.RecordBatch("mid", time.Second, []Share{normalHy(1, 1)}, 0)
	l.RecordBatch("alpha", time.Second, []Share{normalHy(1, 1), {infergate.ClassNormal, infergate.ModeBatch, 1, 1}}, 0)
	l.SetInstances("beta", 1)
	want := []string{
		"alpha/bulk/batch", "alpha/bulk/realtime",
		"alpha/normal/batch", "alpha/normal/hybrid",
		"alpha/urgent/realtime",
		"mid/normal/hybrid",
		"zeta/urgent/realtime",
	}
	wantModels := []string{"alpha", "beta", "mid", "zeta"}
	for i := range 20 { // map iteration order differs from run to run
		r := l.Report()
		var got, gotModels []string
		for _, ln := range r.Lines {
			got = append(got, ln.Model+"/"+ln.Class+"/"+ln.Mode)
		}
		for _, m := range r.Models {
			gotModels = append(gotModels, m.Model)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("report %d lines:\n got %v\nwant %v", i, got, want)
		}
		if fmt.Sprint(gotModels) != fmt.Sprint(wantModels) {
			t.Fatalf("report %d models:\n got %v\nwant %v", i, gotModels, wantModels)
		}
	}
}

func TestModelsAreSeparate(t *testing.T) {
	clk := clock.NewFake(t0)
	l := New(clk, 3600)
	l.SetInstances("a", 1)
	l.SetInstances("b", 3)
	l.RecordBatch("a", 2*time.Second, []Share{normalHy(1, 1)}, 0)
	l.RecordBatch("b", 3*time.Second, []Share{normalHy(1, 1)}, 0)
	clk.Advance(10 * time.Second)
	r := l.Report()
	a, b := modelOf(t, r, "a"), modelOf(t, r, "b")
	checkF(t, "a utilization", a.Utilization, 0.2)
	checkF(t, "b utilization", b.Utilization, 0.1)
	// Each model's idle time goes to its own lines: a has 8 idle s per
	// 2 busy, b 27 per 3.
	checkF(t, "a loaded", lineOf(t, r, "a", "normal", "hybrid").CostPer1kLoaded, 10*1000)
	checkF(t, "b loaded", lineOf(t, r, "b", "normal", "hybrid").CostPer1kLoaded, 30*1000)
}

func TestNilClockUsesRealClock(t *testing.T) {
	l := New(nil, 1)
	l.RecordBatch("m", time.Second, []Share{normalHy(1, 1)}, 0)
	if r := l.Report(); len(r.Lines) != 1 || r.WindowSeconds < 0 {
		t.Errorf("report %+v", r)
	}
}

func TestConcurrentRecordBatch(t *testing.T) {
	const workers, perWorker = 8, 200
	clk := clock.NewFake(t0)
	l := New(clk, 3600)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			c := infergate.Classes[w%infergate.NumClasses]
			for i := range perWorker {
				l.RecordBatch("m", time.Millisecond, []Share{{c, c.DefaultMode(), 1, 2}}, time.Millisecond)
				if i%50 == 0 {
					l.SetInstances("m", w+1)
					_ = l.Report()
				}
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			clk.Advance(time.Millisecond)
			_ = l.Report()
		}
	})
	wg.Wait()
	r := l.Report()
	var requests, items, batches int64
	busy := 0.0
	for _, ln := range r.Lines {
		requests += ln.Requests
		items += ln.Items
		batches += ln.Batches
		busy += ln.BusySeconds
	}
	if requests != workers*perWorker || items != 2*workers*perWorker || batches != workers*perWorker {
		t.Errorf("requests/items/batches = %d/%d/%d, want %d/%d/%d", requests, items, batches,
			workers*perWorker, 2*workers*perWorker, workers*perWorker)
	}
	m := modelOf(t, r, "m")
	if m.Batches != workers*perWorker || m.Items != 2*workers*perWorker {
		t.Errorf("model batches/items = %d/%d", m.Batches, m.Items)
	}
	if math.Abs(busy-0.001*workers*perWorker) > 1e-9 || math.Abs(m.BusySeconds-busy) > 1e-9 {
		t.Errorf("busy: lines %g, model %g, want %g", busy, m.BusySeconds, 0.001*workers*perWorker)
	}
}

func BenchmarkRecordBatch(b *testing.B) {
	l := New(clock.NewFake(t0), 0.1)
	shares := []Share{urgentRT(2, 2), normalHy(3, 10), bulkBatch(4, 20)}
	b.ReportAllocs()
	for b.Loop() {
		l.RecordBatch("m", time.Millisecond, shares, 200*time.Microsecond)
	}
}
