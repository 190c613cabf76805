package dashboard

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate/internal/clock"
)

var start = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// testMetrics registers the families of internal/metrics under the same
// names and labels, so that tests can set any figure directly. The
// latency histogram is optional, as it is in the server.
type testMetrics struct {
	requests                                   *prometheus.CounterVec
	latency, queue, compute, batchSize         *prometheus.HistogramVec
	inferences, executions, failures, busy     *prometheus.CounterVec
	cost                                       *prometheus.CounterVec
	queueLen, instances, utilization, latency1 *prometheus.GaugeVec
}

var latBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func newTestMetrics(tb testing.TB, reg prometheus.Registerer, withLatency bool) *testMetrics {
	tb.Helper()
	counter := func(name string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: name}, append([]string{"model"}, labels...))
	}
	gauge := func(name string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: name}, append([]string{"model"}, labels...))
	}
	histogram := func(name string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: name, Buckets: buckets}, append([]string{"model"}, labels...))
	}
	m := &testMetrics{
		requests:    counter(mRequests, "class", "outcome"),
		latency:     histogram(mLatency, latBuckets, "class"),
		queue:       histogram(mQueueTime, latBuckets, "class"),
		compute:     histogram(mComputeTime, latBuckets, "class"),
		batchSize:   histogram(mBatchSize, []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}),
		inferences:  counter(mInferences),
		executions:  counter(mExecutions),
		failures:    counter(mFailures),
		busy:        counter(mBusy),
		cost:        counter(mCost, "class", "mode"),
		queueLen:    gauge(mQueueLen, "class"),
		instances:   gauge(mInstances),
		utilization: gauge(mUtilization),
		latency1:    gauge(mBatchLat, "batch_size"),
	}
	cs := []prometheus.Collector{m.requests, m.queue, m.compute, m.batchSize, m.inferences, m.executions, m.failures,
		m.busy, m.cost, m.queueLen, m.instances, m.utilization, m.latency1}
	if withLatency {
		cs = append(cs, m.latency)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			tb.Fatal(err)
		}
	}
	return m
}

// observe records n ok requests of class with the given queue and compute
// seconds.
func (m *testMetrics) observe(model, class string, n int, queue, compute float64) {
	m.requests.WithLabelValues(model, class, "ok").Add(float64(n))
	for range n {
		m.queue.WithLabelValues(model, class).Observe(queue)
		m.compute.WithLabelValues(model, class).Observe(compute)
		m.latency.WithLabelValues(model, class).Observe(queue + compute)
	}
}

func checkNum(t *testing.T, name string, got Num, want float64) {
	t.Helper()
	g := float64(got)
	if math.IsNaN(want) {
		if !math.IsNaN(g) {
			t.Errorf("%s = %v, want null", name, g)
		}
		return
	}
	if math.IsNaN(g) || math.Abs(g-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %v, want %v", name, g, want)
	}
}

func checkMap(t *testing.T, name string, got map[string]Num, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		v, ok := got[k]
		if !ok {
			t.Errorf("%s[%s] missing, want %v", name, k, w)
			continue
		}
		checkNum(t, name+"["+k+"]", v, w)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s[%s] = %v, want absent", name, k, got[k])
		}
	}
}

func TestSample(t *testing.T) {
	nan := math.NaN()
	type step struct {
		advance time.Duration
		do      func(m *testMetrics)
	}
	tests := []struct {
		name      string
		price     float64
		noLatency bool // leave infergate_request_latency_seconds out
		steps     []step
		check     func(t *testing.T, p *ModelPoint)
	}{{
		name: "first sample has gauges only",
		steps: []step{{0, func(m *testMetrics) {
			m.queueLen.WithLabelValues("m", "urgent").Set(3)
			m.queueLen.WithLabelValues("m", "bulk").Set(40)
			m.instances.WithLabelValues("m").Set(2)
			m.utilization.WithLabelValues("m").Set(0.25)
			m.observe("m", "urgent", 10, .001, .002)
		}}},
		check: func(t *testing.T, p *ModelPoint) {
			checkMap(t, "queue", p.Queue, map[string]float64{"urgent": 3, "bulk": 40})
			checkNum(t, "instances", p.Instances, 2)
			checkNum(t, "utilization", p.Utilization, 0.25)
			checkMap(t, "ok_rps", p.OKRate, nil)
			checkMap(t, "p99", p.P99, nil)
			checkNum(t, "batch", p.Batch, nan)
			checkNum(t, "saving", p.Saving, nan)
		},
	}, {
		name: "rates by class and outcome over the interval",
		steps: []step{{0, func(m *testMetrics) {
			m.requests.WithLabelValues("m", "urgent", "ok").Add(1000) // before: not counted
		}}, {2 * time.Second, func(m *testMetrics) {
			m.requests.WithLabelValues("m", "urgent", "ok").Add(10)
			m.requests.WithLabelValues("m", "normal", "ok").Add(5)
			m.requests.WithLabelValues("m", "normal", "error").Add(1)
			m.requests.WithLabelValues("m", "bulk", "rejected").Add(1)
			m.requests.WithLabelValues("m", "bulk", "shed").Add(1)
		}}},
		check: func(t *testing.T, p *ModelPoint) {
			checkMap(t, "ok_rps", p.OKRate, map[string]float64{"urgent": 5, "normal": 2.5, "bulk": 0})
			checkMap(t, "fail_rps", p.FailRate, map[string]float64{"urgent": 0, "normal": 0.5, "bulk": 1})
		},
	}, {
		name: "no time passed: rates are null",
		steps: []step{{0, func(m *testMetrics) {
			m.requests.WithLabelValues("m", "urgent", "ok").Add(1)
		}}, {0, func(m *testMetrics) {
			m.requests.WithLabelValues("m", "urgent", "ok").Add(1)
		}}},
		check: func(t *testing.T, p *ModelPoint) {
			checkMap(t, "ok_rps", p.OKRate, map[string]float64{"urgent": nan, "normal": nan, "bulk": nan})
		},
	}, {
		name: "counter reset counts the new value",
		steps: []step{{0, func(m *testMetrics) {
			m.requests.WithLabelValues("m", "urgent", "ok").Add(50)
		}}, {time.Second, func(m *testMetrics) {
			m.requests.Reset()
			m.requests.WithLabelValues("m", "urgent", "ok").Add(7)
		}}},
		check: func(t *testing.T, p *ModelPoint) {
			checkNum(t, "ok_rps[urgent]", p.OKRate["urgent"], 7)
		},
	}, {
		// 100 slow requests before, 100 fast ones in the interval: the
		// quantiles are of the fast ones only, interpolated in (2.5ms, 5ms].
		name: "quantiles from bucket differences",
		steps: []step{{0, func(m *testMetrics) {
			m.observe("m", "normal", 100, .1, .2)
		}}, {time.Second, func(m *testMetrics) {
			m.observe("m", "normal", 100, .001, .002)
		}}},
		check: func(t *testing.T, p *ModelPoint) {
			checkMap(t, "p50", p.P50, map[string]float64{"urgent": nan, "normal": 2.5 + 2.5*0.5, "bulk": nan})
			checkMap(t, "p99", p.P99, map[string]float64{"urgent": nan, "normal": 2.5 + 2.5*0.99, "bulk": nan})
			if p.LatencyApprox != nil {
				t.Errorf("latency_approx = %v, want none", p.LatencyApprox)
			}
		},
	}, {
		// Without the latency histogram: queue p (in (2.5ms, 5ms]) plus
		// compute p (in (25ms, 50ms]).
		name:      "quantiles fall back to queue plus compute",
		noLatency: true,
		steps: []step{{0, func(m *testMetrics) {
			m.observe("m", "bulk", 10, 1, 1)
		}}, {time.Second, func(m *testMetrics) {
			m.observe("m", "bulk", 100, .003, .03)
		}}},
		check: func(t *testing.T, p *ModelPoint) {
			checkMap(t, "p50", p.P50, map[string]float64{"urgent": nan, "normal": nan, "bulk": 3.75 + 37.5})
			checkMap(t, "p99", p.P99, map[string]float64{"urgent": nan, "normal": nan, "bulk": (2.5 + 2.5*.99) + (25 + 25*.99)})
			if !p.LatencyApprox["bulk"] {
				t.Errorf("latency_approx = %v, want bulk", p.LatencyApprox)
			}
		},
	}, {
		name: "mean batch size leaves failed batches out",
		steps: []step{{0, func(m *testMetrics) {
			m.inferences.WithLabelValues("m").Add(10)
			m.executions.WithLabelValues("m").Add(5)
		}}, {time.Second, func(m *testMetrics) {
			m.inferences.WithLabelValues("m").Add(30)
			m.executions.WithLabelValues("m").Add(4)
			m.failures.WithLabelValues("m").Add(1)
		}}},
		check: func(t *testing.T, p *ModelPoint) { checkNum(t, "batch_mean", p.Batch, 10) },
	}, {
		name: "mean batch size from the histogram without counters",
		steps: []step{{0, func(m *testMetrics) {
			m.batchSize.WithLabelValues("m").Observe(100)
		}}, {time.Second, func(m *testMetrics) {
			m.batchSize.WithLabelValues("m").Observe(4)
			m.batchSize.WithLabelValues("m").Observe(8)
		}}},
		check: func(t *testing.T, p *ModelPoint) { checkNum(t, "batch_mean", p.Batch, 6) },
	}, {
		name: "no batches: mean batch size is null",
		steps: []step{{0, func(m *testMetrics) {
			m.inferences.WithLabelValues("m").Add(10)
			m.executions.WithLabelValues("m").Add(5)
		}}, {time.Second, func(*testMetrics) {}}},
		check: func(t *testing.T, p *ModelPoint) { checkNum(t, "batch_mean", p.Batch, nan) },
	}, {
		name: "utilization over the interval",
		steps: []step{{0, func(m *testMetrics) {
			m.instances.WithLabelValues("m").Set(2)
			m.utilization.WithLabelValues("m").Set(0.9) // since start: not used
			m.busy.WithLabelValues("m").Add(100)
		}}, {2 * time.Second, func(m *testMetrics) {
			m.busy.WithLabelValues("m").Add(1)
		}}},
		check: func(t *testing.T, p *ModelPoint) {
			checkNum(t, "utilization", p.Utilization, 0.25)
			checkNum(t, "instances", p.Instances, 2)
		},
	}, {
		name: "utilization over a scale-up uses the mean instance count",
		steps: []step{{0, func(m *testMetrics) {
			m.instances.WithLabelValues("m").Set(2)
			m.busy.WithLabelValues("m").Add(0)
		}}, {time.Second, func(m *testMetrics) {
			m.instances.WithLabelValues("m").Set(4)
			m.busy.WithLabelValues("m").Add(1.5)
		}}},
		check: func(t *testing.T, p *ModelPoint) { checkNum(t, "utilization", p.Utilization, 0.5) },
	}, {
		name: "utilization is capped at 1",
		steps: []step{{0, func(m *testMetrics) {
			m.instances.WithLabelValues("m").Set(1)
			m.busy.WithLabelValues("m").Add(0)
		}}, {time.Second, func(m *testMetrics) {
			m.busy.WithLabelValues("m").Add(3)
		}}},
		check: func(t *testing.T, p *ModelPoint) { checkNum(t, "utilization", p.Utilization, 1) },
	}, {
		// normal ran in two modes: its 100 requests are shared 75/25 by cost.
		name: "cost per 1k by mode",
		steps: []step{{0, func(m *testMetrics) {
			m.cost.WithLabelValues("m", "urgent", "realtime").Add(9)
		}}, {time.Second, func(m *testMetrics) {
			m.requests.WithLabelValues("m", "urgent", "ok").Add(100)
			m.requests.WithLabelValues("m", "normal", "ok").Add(100)
			m.requests.WithLabelValues("m", "bulk", "ok").Add(50)
			m.requests.WithLabelValues("m", "bulk", "error").Add(50) // not in the denominator
			m.cost.WithLabelValues("m", "urgent", "realtime").Add(0.5)
			m.cost.WithLabelValues("m", "normal", "hybrid").Add(0.3)
			m.cost.WithLabelValues("m", "normal", "batch").Add(0.1)
			m.cost.WithLabelValues("m", "bulk", "batch").Add(0.05)
		}}},
		check: func(t *testing.T, p *ModelPoint) {
			checkMap(t, "cost_per_1k", p.CostPer1k, map[string]float64{
				"realtime": 5, "hybrid": 0.3 / 75 * 1000, "batch": 0.15 / 75 * 1000, "all": 0.95 / 250 * 1000})
		},
	}, {
		name: "no cost metric: no cost per 1k",
		steps: []step{{0, func(*testMetrics) {}}, {time.Second, func(m *testMetrics) {
			m.requests.WithLabelValues("m", "urgent", "ok").Add(100)
		}}},
		check: func(t *testing.T, p *ModelPoint) { checkMap(t, "cost_per_1k", p.CostPer1k, nil) },
	}, {
		// $1 per second; 100 items at 10ms alone cost $1, they cost $0.25,
		// then another 100 cost $0.75: running saving 1 - 1/2.
		name:  "running saving against one-by-one cost",
		price: 3600,
		steps: []step{{0, func(m *testMetrics) {
			m.latency1.WithLabelValues("m", "1").Set(0.01)
			m.latency1.WithLabelValues("m", "8").Set(0.02)
			m.inferences.WithLabelValues("m").Add(1000)
		}}, {time.Second, func(m *testMetrics) {
			m.inferences.WithLabelValues("m").Add(100)
			m.cost.WithLabelValues("m", "bulk", "batch").Add(0.25)
		}}, {time.Second, func(m *testMetrics) {
			m.inferences.WithLabelValues("m").Add(100)
			m.cost.WithLabelValues("m", "bulk", "batch").Add(0.5)
			m.cost.WithLabelValues("m", "normal", "hybrid").Add(0.25)
		}}},
		check: func(t *testing.T, p *ModelPoint) { checkNum(t, "saving", p.Saving, 0.5) },
	}, {
		name: "without a price the saving compares busy time",
		steps: []step{{0, func(m *testMetrics) {
			m.latency1.WithLabelValues("m", "1").Set(0.01)
		}}, {time.Second, func(m *testMetrics) {
			m.inferences.WithLabelValues("m").Add(100)
			m.busy.WithLabelValues("m").Add(0.5)
		}}},
		check: func(t *testing.T, p *ModelPoint) { checkNum(t, "saving", p.Saving, 0.5) },
	}, {
		name:  "no batch-1 latency: no saving",
		price: 3600,
		steps: []step{{0, func(m *testMetrics) {
			m.latency1.WithLabelValues("m", "2").Set(0.01)
		}}, {time.Second, func(m *testMetrics) {
			m.inferences.WithLabelValues("m").Add(100)
			m.cost.WithLabelValues("m", "bulk", "batch").Add(0.25)
		}}},
		check: func(t *testing.T, p *ModelPoint) { checkNum(t, "saving", p.Saving, nan) },
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := newTestMetrics(t, reg, !tc.noLatency)
			clk := clock.NewFake(start)
			d := New(Options{Gatherer: reg, Clock: clk, PricePerInstanceHour: tc.price})
			for _, s := range tc.steps {
				clk.Advance(s.advance)
				s.do(m)
				d.Sample()
			}
			r := d.response(0, 0)
			if len(r.Points) != len(tc.steps) {
				t.Fatalf("%d points, want %d", len(r.Points), len(tc.steps))
			}
			last := r.Points[len(r.Points)-1]
			if want := clk.Now().UnixMilli(); last.T != want {
				t.Errorf("t = %d, want %d", last.T, want)
			}
			p := last.Models["m"]
			if p == nil {
				t.Fatalf("no point for model m: %v", last.Models)
			}
			tc.check(t, p)
		})
	}
}

func TestQuantile(t *testing.T) {
	b := []float64{1, 2, 4}
	tests := []struct {
		name string
		q    float64
		h    hist
		want float64
	}{
		{"empty", .5, hist{bounds: b, cum: []float64{0, 0, 0}}, math.NaN()},
		{"first bucket starts at 0", .5, hist{bounds: b, cum: []float64{10, 10, 10}, count: 10}, 0.5},
		{"interpolates within a bucket", .75, hist{bounds: b, cum: []float64{0, 0, 4}, count: 4}, 3.5},
		{"skips empty buckets", .5, hist{bounds: b, cum: []float64{2, 2, 4}, count: 4}, 1},
		{"upper edge", 1, hist{bounds: b, cum: []float64{2, 4, 4}, count: 4}, 2},
		{"rank in +Inf reports the top bound", .99, hist{bounds: b, cum: []float64{1, 1, 1}, count: 10}, 4},
		{"p99 of 100", .99, hist{bounds: b, cum: []float64{50, 100, 100}, count: 100}, 1 + 49.0/50},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkNum(t, "quantile", Num(quantile(tc.q, tc.h)), tc.want)
		})
	}
}

func TestKeepAndSince(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newTestMetrics(t, reg, true)
	m.instances.WithLabelValues("m").Set(1)
	clk := clock.NewFake(start)
	d := New(Options{Gatherer: reg, Clock: clk, Keep: 3})
	for range 5 {
		d.Sample()
		clk.Advance(time.Second)
	}
	r := d.response(0, 0)
	if len(r.Points) != 3 {
		t.Fatalf("%d points, want 3", len(r.Points))
	}
	if want := start.Add(2 * time.Second).UnixMilli(); r.Points[0].T != want {
		t.Errorf("oldest point t = %d, want %d", r.Points[0].T, want)
	}
	if got := d.response(r.Points[1].T, 0).Points; len(got) != 1 || got[0].T != r.Points[2].T {
		t.Errorf("since second point: got %v, want the third only", got)
	}
	if got := d.response(r.Now, 0).Points; len(got) != 0 {
		t.Errorf("since now: %d points, want 0", len(got))
	}
	if r.WindowMS != 3000 || r.IntervalMS != 1000 {
		t.Errorf("window %d ms, interval %d ms; want 3000, 1000", r.WindowMS, r.IntervalMS)
	}
}

func TestRunSamplesOnTimer(t *testing.T) {
	reg := prometheus.NewRegistry()
	newTestMetrics(t, reg, true).instances.WithLabelValues("m").Set(1)
	clk := clock.NewFake(start)
	d := New(Options{Gatherer: reg, Clock: clk, Interval: 5 * time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()

	points := func() int { return len(d.response(0, 0).Points) }
	for want := 1; want <= 3; want++ {
		waitFor(t, func() bool { return clk.Timers() == 1 && points() == want })
		clk.Advance(5 * time.Second)
	}
	waitFor(t, func() bool { return points() == 4 })
	cancel()
	<-done
	r := d.response(0, 0)
	if got, want := r.Points[3].T-r.Points[0].T, int64(15000); got != want {
		t.Errorf("points span %d ms, want %d", got, want)
	}
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
