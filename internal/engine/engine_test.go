package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/metrics"
)

const ms = time.Millisecond

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// testRuntime opens fake sessions, wrapped so that Close calls are
// counted, and can fail a chosen Open call.
type testRuntime struct {
	// make builds the session of the i-th Open call (0-based). Optional:
	// a plain fake session.
	make func(i int) *fake.Session
	// shape, if set, wraps each session so that it reports these specs.
	inputs, outputs []infergate.TensorSpec
	// failOpen is the 1-based Open call that fails; 0 for none.
	failOpen int

	mu       sync.Mutex
	opens    int
	opts     []backend.Options
	paths    []string
	sessions []*trackedSession
	closes   atomic.Int32
}

var errOpen = errors.New("cannot open model")

func (*testRuntime) Name() string { return "test" }

func (r *testRuntime) Open(path string, opts backend.Options) (backend.Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.opens
	r.opens++
	r.opts = append(r.opts, opts)
	r.paths = append(r.paths, path)
	if r.failOpen == i+1 {
		return nil, errOpen
	}
	f := &fake.Session{}
	if r.make != nil {
		f = r.make(i)
	}
	s := &trackedSession{Session: f, rt: r, inputs: r.inputs, outputs: r.outputs}
	r.sessions = append(r.sessions, s)
	return s, nil
}

// opened returns the sessions opened so far.
func (r *testRuntime) opened() []*trackedSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sessions)
}

// trackedSession is a fake session that counts Close calls and may report
// other tensor specs (a model without a batch dimension, for one).
type trackedSession struct {
	*fake.Session
	rt              *testRuntime
	inputs, outputs []infergate.TensorSpec
	closed          atomic.Int32
}

func (s *trackedSession) Inputs() []infergate.TensorSpec {
	if s.inputs != nil {
		return s.inputs
	}
	return s.Session.Inputs()
}

func (s *trackedSession) Outputs() []infergate.TensorSpec {
	if s.outputs != nil {
		return s.outputs
	}
	return s.Session.Outputs()
}

func (s *trackedSession) Close() error {
	s.closed.Add(1)
	s.rt.closes.Add(1)
	return s.Session.Close()
}

type env struct {
	e   *Engine
	rt  *testRuntime
	clk *clock.Fake
	reg *prometheus.Registry
}

// newEnv returns an engine on rt with a fake clock and a ledger priced at
// 36 USD per instance-hour (0.01 per second). The engine is closed at the
// end of the test.
func newEnv(t *testing.T, rt *testRuntime) *env {
	t.Helper()
	clk := clock.NewFake(t0)
	reg := prometheus.NewRegistry()
	e := New(Options{Runtime: rt, Ledger: cost.New(clk, 36), Registerer: reg, Clock: clk})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &env{e: e, rt: rt, clk: clk, reg: reg}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLoadWarmup(t *testing.T) {
	tests := []struct {
		name      string
		mc        config.Model
		wantSizes []int // batch sizes in the latency model, in order
		wantCount int64 // observations per size: runs x instances
	}{
		{"two instances up to 6", config.Model{Instances: 2, MaxBatchSize: 6, WarmupRuns: 2}, []int{1, 2, 4, 6}, 4},
		{"power of two max", config.Model{MaxBatchSize: 8, WarmupRuns: 1}, []int{1, 2, 4, 8}, 1},
		{"max 1", config.Model{MaxBatchSize: 1, WarmupRuns: 3}, []int{1}, 3},
		{"max 2", config.Model{MaxBatchSize: 2, WarmupRuns: 1}, []int{1, 2}, 1},
		{"defaults: max 64, 3 runs", config.Model{}, []int{1, 2, 4, 8, 16, 32, 64}, 3},
		{"disabled", config.Model{Instances: 2, MaxBatchSize: 8, WarmupRuns: -1}, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t, &testRuntime{})
			mc := tc.mc
			mc.Name, mc.Path = "m", "/models/m.onnx"
			mc.BulkInstances = -1 // TestBulkInstances covers them
			if err := v.e.Load(t.Context(), mc); err != nil {
				t.Fatal(err)
			}
			m, err := v.e.Model("m")
			if err != nil {
				t.Fatal(err)
			}
			lat := m.Sched.Latency()
			var sizes []int
			for _, p := range lat.Points() {
				sizes = append(sizes, p.BatchSize)
				if p.Count != tc.wantCount {
					t.Errorf("size %d observed %d times, want %d", p.BatchSize, p.Count, tc.wantCount)
				}
			}
			if !slices.Equal(sizes, tc.wantSizes) {
				t.Errorf("latency model sizes %v, want %v", sizes, tc.wantSizes)
			}
			warm := tc.wantSizes != nil
			maxBatch := m.Info.MaxBatchSize
			if lat.Measured(1) != warm || lat.Measured(maxBatch) != warm {
				t.Errorf("Measured(1) = %v, Measured(%d) = %v; want %v", lat.Measured(1), maxBatch, lat.Measured(maxBatch), warm)
			}
			if _, ok := lat.Estimate(1); ok != warm {
				t.Errorf("Estimate(1) ok = %v, want %v", ok, warm)
			}
			// Every session ran each size runs+1 times: the first run of
			// each is discarded.
			var wantRuns []int
			for _, n := range tc.wantSizes {
				for range mc.WarmupRuns + 1 {
					wantRuns = append(wantRuns, n)
				}
			}
			if mc.WarmupRuns == 0 { // defaulted to 3
				wantRuns = nil
				for _, n := range tc.wantSizes {
					wantRuns = append(wantRuns, n, n, n, n)
				}
			}
			for i, s := range v.rt.opened() {
				if got := s.Batches(); !slices.Equal(got, wantRuns) {
					t.Errorf("session %d ran %v, want %v", i, got, wantRuns)
				}
			}
		})
	}
}

func TestLoadInfo(t *testing.T) {
	v := newEnv(t, &testRuntime{})
	mc := config.Model{Name: "m", Path: "/models/m.onnx", Instances: 3, Threads: 2, MaxBatchSize: 16, WarmupRuns: -1, BulkInstances: -1}
	if err := v.e.Load(t.Context(), mc); err != nil {
		t.Fatal(err)
	}
	m, err := v.e.Model("m")
	if err != nil {
		t.Fatal(err)
	}
	f := &fake.Session{}
	want := infergate.ModelInfo{Name: "m", Version: "1", Platform: "onnx", Runtime: "test",
		Inputs: f.Inputs(), Outputs: f.Outputs(), MaxBatchSize: 16}
	if fmt.Sprint(m.Info) != fmt.Sprint(want) {
		t.Errorf("Info = %+v, want %+v", m.Info, want)
	}
	if v.rt.opens != 3 {
		t.Errorf("opened %d sessions, want 3", v.rt.opens)
	}
	for i := range v.rt.opens {
		if v.rt.opts[i].Threads != 2 || v.rt.paths[i] != mc.Path {
			t.Errorf("open %d: path %q threads %d", i, v.rt.paths[i], v.rt.opts[i].Threads)
		}
	}
	if v.e.RuntimeName() != "test" {
		t.Errorf("RuntimeName = %q", v.e.RuntimeName())
	}
	// The default class policies follow the model's maximum batch size.
	wantMax := map[infergate.Class]int{infergate.ClassUrgent: 8, infergate.ClassNormal: 16, infergate.ClassBulk: 16}
	for c, n := range wantMax {
		if got := m.Sched.Policy(c).MaxBatchSize; got != n {
			t.Errorf("%s policy max batch %d, want %d", c, got, n)
		}
	}
	// Loading registers the model's gauges; the ledger knows its instances.
	const wantInstances = `
# HELP infergate_instances Provisioned model instances.
# TYPE infergate_instances gauge
infergate_instances{model="m"} 3
`
	if err := testutil.GatherAndCompare(v.reg, strings.NewReader(wantInstances), "infergate_instances"); err != nil {
		t.Error(err)
	}
	if r := v.e.Ledger().Report(); len(r.Models) != 1 || r.Models[0].Instances != 3 {
		t.Errorf("ledger models %+v, want m with 3 instances", r.Models)
	}
}

func TestBatchDimension(t *testing.T) {
	dyn := []infergate.TensorSpec{{Name: "input", DataType: infergate.FP32, Shape: []int64{-1, 4}}}
	dynOut := []infergate.TensorSpec{{Name: "sum", DataType: infergate.FP32, Shape: []int64{-1, 1}}}
	tests := []struct {
		name            string
		inputs, outputs []infergate.TensorSpec
		warmup          int
		want            int
	}{
		{"dynamic first dims", nil, nil, -1, 8},
		{"fixed input [1,4]", []infergate.TensorSpec{{Name: "input", DataType: infergate.FP32, Shape: []int64{1, 4}}},
			[]infergate.TensorSpec{{Name: "sum", DataType: infergate.FP32, Shape: []int64{1, 1}}}, 2, 0},
		{"fixed output only", dyn, []infergate.TensorSpec{{Name: "sum", DataType: infergate.FP32, Shape: []int64{1, 1}}}, -1, 0},
		{"scalar input", []infergate.TensorSpec{{Name: "x", DataType: infergate.FP32, Shape: []int64{}}}, dynOut, -1, 0},
		{"one of two inputs fixed", append(slices.Clone(dyn), infergate.TensorSpec{Name: "mask", DataType: infergate.INT64, Shape: []int64{2, 4}}),
			dynOut, -1, 0},
		{"dynamic non-batch dim", []infergate.TensorSpec{{Name: "input", DataType: infergate.FP32, Shape: []int64{-1, -1}}}, dynOut, -1, 8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t, &testRuntime{inputs: tc.inputs, outputs: tc.outputs})
			if err := v.e.Load(t.Context(), config.Model{Name: "m", Path: "p", MaxBatchSize: 8, WarmupRuns: tc.warmup}); err != nil {
				t.Fatal(err)
			}
			m, err := v.e.Model("m")
			if err != nil {
				t.Fatal(err)
			}
			if m.Info.MaxBatchSize != tc.want {
				t.Errorf("MaxBatchSize = %d, want %d", m.Info.MaxBatchSize, tc.want)
			}
			if tc.want == 0 {
				// Without a batch dimension every batch is one request.
				for _, c := range infergate.Classes {
					if got := m.Sched.Policy(c).MaxBatchSize; got != 1 {
						t.Errorf("%s policy max batch %d, want 1", c, got)
					}
				}
			}
			if tc.warmup > 0 {
				// Warmup ran the fixed shape only, at batch 1.
				if got := v.rt.opened()[0].Batches(); !slices.Equal(got, []int{1, 1, 1}) {
					t.Errorf("warmup batches %v, want [1 1 1]", got)
				}
				if !m.Sched.Latency().Measured(1) || len(m.Sched.Latency().Points()) != 1 {
					t.Errorf("latency points %+v, want batch 1 only", m.Sched.Latency().Points())
				}
				// And it serves: a request of the fixed shape runs alone.
				resp, err := m.Sched.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, 1.5)}, 1, 0)
				if err != nil {
					t.Fatal(err)
				}
				if got := fake.Floats(resp.Outputs[0]); !slices.Equal(got, []float32{6}) || resp.BatchSize != 1 {
					t.Errorf("output %v batch %d, want [6] 1", got, resp.BatchSize)
				}
			}
		})
	}
}

func TestModelNotFound(t *testing.T) {
	v := newEnv(t, &testRuntime{})
	for _, name := range []string{"nope", "", "m"} {
		if _, err := v.e.Model(name); infergate.ErrorCode(err) != infergate.ENotFound {
			t.Errorf("Model(%q) before load: %v, want %s", name, err, infergate.ENotFound)
		}
	}
	if err := v.e.Load(t.Context(), config.Model{Name: "m", Path: "p", WarmupRuns: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.e.Model("m"); err != nil {
		t.Errorf("Model(m): %v", err)
	}
	if _, err := v.e.Model("nope"); infergate.ErrorCode(err) != infergate.ENotFound {
		t.Errorf("Model(nope): %v, want %s", err, infergate.ENotFound)
	}
}

func TestModelsSorted(t *testing.T) {
	v := newEnv(t, &testRuntime{})
	for _, name := range []string{"zeta", "alpha", "mid"} {
		if err := v.e.Load(t.Context(), config.Model{Name: name, Path: "p", WarmupRuns: -1}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, m := range v.e.Models() {
		names = append(names, m.Name)
	}
	if !slices.Equal(names, []string{"alpha", "mid", "zeta"}) {
		t.Errorf("Models = %v", names)
	}
}

func TestLoadTwice(t *testing.T) {
	v := newEnv(t, &testRuntime{})
	if err := v.e.Load(t.Context(), config.Model{Name: "m", Path: "a", Instances: 2, WarmupRuns: -1, BulkInstances: -1,
		Classes: map[string]batching.Policy{"urgent": {Kind: batching.Single}}}); err != nil {
		t.Fatal(err)
	}
	first, _ := v.e.Model("m")
	err := v.e.Load(t.Context(), config.Model{Name: "m", Path: "b", Instances: 3, WarmupRuns: 1})
	if err == nil || !strings.Contains(err.Error(), "already loaded") {
		t.Fatalf("second Load: %v, want an already-loaded error", err)
	}
	// The second load's sessions are closed, the first's are not.
	for i, s := range v.rt.opened() {
		want := int32(0)
		if i >= 2 {
			want = 1
		}
		if got := s.closed.Load(); got != want {
			t.Errorf("session %d closed %d times, want %d", i, got, want)
		}
	}
	if m, _ := v.e.Model("m"); m != first || len(v.e.Models()) != 1 {
		t.Errorf("the first model was replaced")
	}
	// It still serves.
	resp, err := first.Sched.Submit(t.Context(), infergate.ClassUrgent, []infergate.Tensor{fake.Input(4, 2)}, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := fake.Floats(resp.Outputs[0]); !slices.Equal(got, []float32{8}) {
		t.Errorf("output %v, want [8]", got)
	}
}

func TestLoadFailureClosesSessions(t *testing.T) {
	errRun := errors.New("kernel failed")
	tests := []struct {
		name       string
		instances  int
		failOpen   int
		failRunAt  int  // batch size whose warmup run fails; 0 for none
		cancel     bool // load with a canceled context
		wantOpened int
		wantErr    error
	}{
		{"first open fails", 3, 1, 0, false, 0, errOpen},
		{"second open fails", 3, 2, 0, false, 1, errOpen},
		{"last open fails", 3, 3, 0, false, 2, errOpen},
		{"first bulk open fails", 2, 3, 0, false, 2, errOpen},
		{"second bulk open fails", 2, 4, 0, false, 3, errOpen},
		// Two instances and, by default, two bulk instances.
		{"warmup run fails", 2, 0, 4, false, 4, errRun},
		{"warmup canceled", 2, 0, 0, true, 4, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rt := &testRuntime{failOpen: tc.failOpen, make: func(int) *fake.Session {
				return &fake.Session{Err: func(in []infergate.Tensor) error {
					if int(in[0].Shape[0]) == tc.failRunAt {
						return errRun
					}
					return nil
				}}
			}}
			v := newEnv(t, rt)
			ctx := t.Context()
			if tc.cancel {
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			err := v.e.Load(ctx, config.Model{Name: "m", Path: "p", Instances: tc.instances, MaxBatchSize: 8, WarmupRuns: 1})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Load: %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), "model m") {
				t.Errorf("error %q does not name the model", err)
			}
			opened := v.rt.opened()
			if len(opened) != tc.wantOpened {
				t.Fatalf("opened %d sessions, want %d", len(opened), tc.wantOpened)
			}
			for i, s := range opened {
				if got := s.closed.Load(); got != 1 {
					t.Errorf("session %d closed %d times, want 1", i, got)
				}
			}
			if _, err := v.e.Model("m"); infergate.ErrorCode(err) != infergate.ENotFound {
				t.Errorf("Model(m) after failed load: %v", err)
			}
			if n, err := testutil.GatherAndCount(v.reg, "infergate_instances"); err != nil || n != 0 {
				t.Errorf("instances gauges %d, %v; want none", n, err)
			}
			// The name is free for a load that works.
			v.rt.failOpen = 0
			for _, s := range opened {
				s.Err = nil
			}
			if err := v.e.Load(t.Context(), config.Model{Name: "m", Path: "p", WarmupRuns: -1}); err != nil {
				t.Errorf("load after failure: %v", err)
			}
		})
	}
}

// TestSubmitsReachLedger runs requests through the scheduler on sessions
// whose execution advances the fake clock by 10 ms + 5 ms per item, so that
// every busy time, and every cost, is known:
//
//	normal 1 item  -> 15 ms, batch-1 latency now 15 ms
//	normal 4 items -> 30 ms (one request of 4 items)
//	urgent 1 item  -> 15 ms
//	bulk 2 items   -> 20 ms (bulk configured to account as hybrid)
func TestSubmitsReachLedger(t *testing.T) {
	var clk *clock.Fake
	rt := &testRuntime{make: func(int) *fake.Session {
		return &fake.Session{Latency: func(n int) time.Duration {
			clk.Advance(10*ms + time.Duration(n)*5*ms)
			return 0
		}}
	}}
	v := newEnv(t, rt)
	clk = v.clk
	single := batching.Policy{Kind: batching.Single}
	mc := config.Model{Name: "m", Path: "p", Instances: 2, MaxBatchSize: 8, WarmupRuns: -1, BulkInstances: -1, // fake-clock busy time; bulk instances measure thread CPU time
		Classes: map[string]batching.Policy{"urgent": single, "normal": single,
			"bulk": {Kind: batching.Single, Mode: infergate.ModeHybrid}}}
	if err := v.e.Load(t.Context(), mc); err != nil {
		t.Fatal(err)
	}
	m, err := v.e.Model("m")
	if err != nil {
		t.Fatal(err)
	}
	submits := []struct {
		class infergate.Class
		vals  []float32
	}{
		{infergate.ClassNormal, []float32{1}},
		{infergate.ClassNormal, []float32{1, 2, 3, 4}},
		{infergate.ClassUrgent, []float32{0.5}},
		{infergate.ClassBulk, []float32{-1, 10}},
	}
	for i, s := range submits {
		resp, err := m.Sched.Submit(t.Context(), s.class, []infergate.Tensor{fake.Input(4, s.vals...)}, len(s.vals), 0)
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		var want []float32
		for _, x := range s.vals {
			want = append(want, 4*x)
		}
		if got := fake.Floats(resp.Outputs[0]); !slices.Equal(got, want) {
			t.Errorf("submit %d: output %v, want %v", i, got, want)
		}
		if wantBusy := 10*ms + time.Duration(len(s.vals))*5*ms; resp.Compute != wantBusy || resp.BatchSize != len(s.vals) {
			t.Errorf("submit %d: compute %v batch %d, want %v %d", i, resp.Compute, resp.BatchSize, wantBusy, len(s.vals))
		}
	}

	r := v.e.Ledger().Report()
	type lineWant struct {
		class, mode             string
		requests, items, batchs int64
		busy                    float64
		saving                  float64 // 1 - busy / (items x 15 ms)
	}
	wants := []lineWant{
		{"bulk", "hybrid", 1, 2, 1, 0.020, 1 - 20.0/30},
		{"normal", "hybrid", 2, 5, 2, 0.045, 1 - 45.0/75},
		{"urgent", "realtime", 1, 1, 1, 0.015, 0},
	}
	if len(r.Lines) != len(wants) {
		t.Fatalf("ledger lines %+v, want %d", r.Lines, len(wants))
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-12 }
	for i, w := range wants {
		ln := r.Lines[i]
		if ln.Model != "m" || ln.Class != w.class || ln.Mode != w.mode || ln.Requests != w.requests || ln.Items != w.items || ln.Batches != w.batchs {
			t.Errorf("line %d = %+v, want %+v", i, ln, w)
			continue
		}
		if !near(ln.BusySeconds, w.busy) || !near(ln.CostUSD, w.busy*0.01) {
			t.Errorf("%s: busy %g cost %g, want %g %g", w.class, ln.BusySeconds, ln.CostUSD, w.busy, w.busy*0.01)
		}
		if ln.Saving == nil || !near(*ln.Saving, w.saving) {
			t.Errorf("%s: saving %v, want %g", w.class, ln.Saving, w.saving)
		}
	}
	// Two instances provisioned for the 80 ms the batches took, one busy
	// at a time: utilization 0.5.
	if len(r.Models) != 1 || !near(r.Models[0].BusySeconds, 0.08) || !near(r.Models[0].ProvisionedSeconds, 0.16) ||
		!near(r.Models[0].Utilization, 0.5) {
		t.Errorf("model report %+v, want busy 0.08 provisioned 0.16 utilization 0.5", r.Models)
	}
	// The metrics got the same batches, and the utilization gauge reads
	// the ledger at scrape time.
	const want = `
# HELP infergate_execution_count_total Batches executed.
# TYPE infergate_execution_count_total counter
infergate_execution_count_total{model="m"} 4
# HELP infergate_inference_count_total Items inferred (average batch size = inference_count / execution_count).
# TYPE infergate_inference_count_total counter
infergate_inference_count_total{model="m"} 8
# HELP infergate_instance_utilization Busy share of provisioned instance time since start.
# TYPE infergate_instance_utilization gauge
infergate_instance_utilization{model="m"} 0.5
`
	if err := testutil.GatherAndCompare(v.reg, strings.NewReader(want),
		"infergate_execution_count_total", "infergate_inference_count_total", "infergate_instance_utilization"); err != nil {
		t.Error(err)
	}
	// The live latency model is exported per batch size.
	m, _ = v.e.Model("m")
	var wantLat strings.Builder
	wantLat.WriteString("# HELP infergate_batch_latency_seconds Live latency model: moving mean of the measured execution time of a batch, per batch size.\n")
	wantLat.WriteString("# TYPE infergate_batch_latency_seconds gauge\n")
	pts := m.Sched.Latency().Points()
	if len(pts) == 0 {
		t.Fatal("no latency points")
	}
	for _, p := range pts {
		fmt.Fprintf(&wantLat, "infergate_batch_latency_seconds{batch_size=\"%d\",model=\"m\"} %g\n", p.BatchSize, p.MeanMS/1e3)
	}
	if err := testutil.GatherAndCompare(v.reg, strings.NewReader(wantLat.String()), "infergate_batch_latency_seconds"); err != nil {
		t.Error(err)
	}
}

// A failed batch reaches the metrics but not the ledger.
func TestFailedBatchNotInLedger(t *testing.T) {
	v := newEnv(t, &testRuntime{make: func(int) *fake.Session {
		return &fake.Session{Err: func([]infergate.Tensor) error { return errors.New("boom") }}
	}})
	if err := v.e.Load(t.Context(), config.Model{Name: "m", Path: "p", WarmupRuns: -1,
		Classes: map[string]batching.Policy{"normal": {Kind: batching.Single}}}); err != nil {
		t.Fatal(err)
	}
	m, _ := v.e.Model("m")
	_, err := m.Sched.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, 1)}, 1, 0)
	if infergate.ErrorCode(err) != infergate.EInternal {
		t.Fatalf("submit: %v, want %s", err, infergate.EInternal)
	}
	if r := v.e.Ledger().Report(); len(r.Lines) != 0 {
		t.Errorf("ledger lines %+v, want none", r.Lines)
	}
	const want = `
# HELP infergate_batch_failures_total Batches whose execution failed.
# TYPE infergate_batch_failures_total counter
infergate_batch_failures_total{model="m"} 1
`
	if err := testutil.GatherAndCompare(v.reg, strings.NewReader(want), "infergate_batch_failures_total"); err != nil {
		t.Error(err)
	}
}

func TestCloseDrainsAndClosesSessions(t *testing.T) {
	v := newEnv(t, &testRuntime{})
	// Default hybrid policies on a fake clock that never moves: a lone
	// request stays queued until Close flushes it.
	if err := v.e.Load(t.Context(), config.Model{Name: "m", Path: "p", Instances: 2, MaxBatchSize: 8, WarmupRuns: -1}); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Load(t.Context(), config.Model{Name: "n", Path: "p", WarmupRuns: -1}); err != nil {
		t.Fatal(err)
	}
	v.e.SetReady(true)
	m, _ := v.e.Model("m")
	type result struct {
		resp *batching.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := m.Sched.Submit(context.Background(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, 3)}, 1, 0)
		done <- result{resp, err}
	}()
	waitFor(t, "request queued", func() bool { return m.Sched.QueueLen(infergate.ClassNormal) == 1 })
	for _, s := range v.rt.opened() {
		if n := len(s.Batches()); n != 0 {
			t.Fatalf("ran a batch before Close")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := v.e.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Close returned after the queued request ran: its batch is in the
	// ledger, which the worker records before it answers the request.
	if r := v.e.Ledger().Report(); len(r.Lines) != 1 || r.Lines[0].Requests != 1 {
		t.Errorf("ledger lines after Close %+v, want the one request", r.Lines)
	}
	var ran []int
	for _, s := range v.rt.opened() {
		ran = append(ran, s.Batches()...)
	}
	if !slices.Equal(ran, []int{1}) {
		t.Errorf("batches run %v, want [1]", ran)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("queued request: %v", r.err)
		}
		if got := fake.Floats(r.resp.Outputs[0]); !slices.Equal(got, []float32{12}) {
			t.Errorf("output %v, want [12]", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queued request was not answered")
	}
	if v.e.Ready() {
		t.Error("still ready after Close")
	}
	for i, s := range v.rt.opened() {
		if got := s.closed.Load(); got != 1 {
			t.Errorf("session %d closed %d times, want 1", i, got)
		}
	}
	for _, name := range []string{"m", "n"} {
		if _, err := v.e.Model(name); infergate.ErrorCode(err) != infergate.ENotFound {
			t.Errorf("Model(%s) after Close: %v", name, err)
		}
	}
	if _, err := m.Sched.Submit(t.Context(), infergate.ClassNormal, []infergate.Tensor{fake.Input(4, 1)}, 1, 0); infergate.ErrorCode(err) != infergate.EUnavailable {
		t.Errorf("submit after Close: %v, want %s", err, infergate.EUnavailable)
	}
	// A second Close has nothing left to do.
	if err := v.e.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Three instances and as many bulk instances.
	if got := v.rt.closes.Load(); got != 6 {
		t.Errorf("%d session closes in all, want 6", got)
	}
}

func f32s(data []byte) []float32 {
	out := make([]float32, len(data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return out
}

func f64s(data []byte) []float64 {
	out := make([]float64, len(data)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
	}
	return out
}

func TestSyntheticInputs(t *testing.T) {
	tests := []struct {
		name      string
		spec      infergate.TensorSpec
		n         int
		wantShape []int64
	}{
		{"fp32 batch", infergate.TensorSpec{Name: "x", DataType: infergate.FP32, Shape: []int64{-1, 16}}, 5, []int64{5, 16}},
		{"fp32 dynamic inner dims", infergate.TensorSpec{Name: "x", DataType: infergate.FP32, Shape: []int64{-1, -1, 3, -1}}, 4, []int64{4, 1, 3, 1}},
		{"fp32 fixed batch", infergate.TensorSpec{Name: "x", DataType: infergate.FP32, Shape: []int64{1, 8}}, 7, []int64{1, 8}},
		{"fp32 fixed first, dynamic second", infergate.TensorSpec{Name: "x", DataType: infergate.FP32, Shape: []int64{2, -1}}, 7, []int64{2, 1}},
		{"fp64", infergate.TensorSpec{Name: "d", DataType: infergate.FP64, Shape: []int64{-1, 10}}, 3, []int64{3, 10}},
		{"int64 ids", infergate.TensorSpec{Name: "ids", DataType: infergate.INT64, Shape: []int64{-1, -1}}, 6, []int64{6, 1}},
		{"int32", infergate.TensorSpec{Name: "i", DataType: infergate.INT32, Shape: []int64{-1, 2}}, 2, []int64{2, 2}},
		{"bool", infergate.TensorSpec{Name: "b", DataType: infergate.BOOL, Shape: []int64{-1, 3}}, 2, []int64{2, 3}},
		{"fp16 is zeros", infergate.TensorSpec{Name: "h", DataType: infergate.FP16, Shape: []int64{-1, 4}}, 2, []int64{2, 4}},
		{"scalar", infergate.TensorSpec{Name: "s", DataType: infergate.FP32, Shape: []int64{}}, 9, []int64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			specShape := slices.Clone(tc.spec.Shape)
			out := SyntheticInputs([]infergate.TensorSpec{tc.spec}, tc.n, rand.New(rand.NewPCG(7, 8)))
			if len(out) != 1 {
				t.Fatalf("%d tensors, want 1", len(out))
			}
			x := out[0]
			if x.Name != tc.spec.Name || x.DataType != tc.spec.DataType || !slices.Equal(x.Shape, tc.wantShape) {
				t.Errorf("tensor %s %s %v, want %s %s %v", x.Name, x.DataType, x.Shape, tc.spec.Name, tc.spec.DataType, tc.wantShape)
			}
			if !slices.Equal(tc.spec.Shape, specShape) {
				t.Errorf("spec shape changed to %v", tc.spec.Shape)
			}
			count := int(infergate.NumElements(tc.wantShape))
			if len(x.Data) != count*tc.spec.DataType.Size() {
				t.Fatalf("%d data bytes, want %d", len(x.Data), count*tc.spec.DataType.Size())
			}
			var vals []float64
			switch tc.spec.DataType {
			case infergate.FP32:
				for _, f := range f32s(x.Data) {
					vals = append(vals, float64(f))
				}
			case infergate.FP64:
				vals = f64s(x.Data)
			default:
				if slices.ContainsFunc(x.Data, func(b byte) bool { return b != 0 }) {
					t.Errorf("%s data not all zeros", tc.spec.DataType)
				}
				return
			}
			// Floats are uniform in [-1, 1): all in range, not all
			// alike, both signs once there are a few.
			neg, pos := 0, 0
			for _, f := range vals {
				if f < -1 || f >= 1 || math.IsNaN(f) {
					t.Fatalf("value %g outside [-1, 1)", f)
				}
				if f < 0 {
					neg++
				} else {
					pos++
				}
			}
			if count >= 16 && (neg == 0 || pos == 0) {
				t.Errorf("%d negative and %d non-negative values of %d", neg, pos, count)
			}
		})
	}
}

func TestSyntheticInputsSeveral(t *testing.T) {
	specs := []infergate.TensorSpec{
		{Name: "input_ids", DataType: infergate.INT64, Shape: []int64{-1, -1}},
		{Name: "features", DataType: infergate.FP32, Shape: []int64{-1, 32}},
	}
	a := SyntheticInputs(specs, 3, rand.New(rand.NewPCG(1, 2)))
	b := SyntheticInputs(specs, 3, rand.New(rand.NewPCG(1, 2)))
	if len(a) != 2 || a[0].Name != "input_ids" || a[1].Name != "features" {
		t.Fatalf("tensors %+v: want input_ids, features in spec order", a)
	}
	if !slices.Equal(a[0].Shape, []int64{3, 1}) || !slices.Equal(a[1].Shape, []int64{3, 32}) {
		t.Errorf("shapes %v %v", a[0].Shape, a[1].Shape)
	}
	// The same seed gives the same data.
	for i := range a {
		if !slices.Equal(a[i].Data, b[i].Data) {
			t.Errorf("tensor %d differs between runs with one seed", i)
		}
	}
	if len(SyntheticInputs(nil, 4, rand.New(rand.NewPCG(1, 2)))) != 0 {
		t.Error("inputs for no specs")
	}
}

func TestBulkInstances(t *testing.T) {
	tests := []struct {
		name      string
		instances int
		bulk      int
		wantBulk  int
	}{
		{"default: as many as instances", 2, 0, 2},
		{"explicit", 1, 3, 3},
		{"none", 2, -1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t, &testRuntime{})
			mc := config.Model{Name: "m", Path: "p", Instances: tc.instances, BulkInstances: tc.bulk, Threads: 1, MaxBatchSize: 4, WarmupRuns: 1}
			if err := v.e.Load(t.Context(), mc); err != nil {
				t.Fatal(err)
			}
			m, _ := v.e.Model("m")
			opened := v.rt.opened()
			if len(opened) != tc.instances+tc.wantBulk {
				t.Fatalf("opened %d sessions, want %d", len(opened), tc.instances+tc.wantBulk)
			}
			// Every session, bulk ones included, was warmed up.
			for i, s := range opened {
				if len(s.Batches()) == 0 {
					t.Errorf("session %d was not warmed up", i)
				}
			}
			before := make([]int, len(opened))
			for i, s := range opened {
				before[i] = len(s.Batches())
			}
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					if _, err := m.Sched.Submit(t.Context(), infergate.ClassBulk, []infergate.Tensor{fake.Input(4, 1)}, 1, 0); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			ranOn := map[bool]int{}
			for i, s := range opened {
				ranOn[i >= tc.instances] += len(s.Batches()) - before[i]
			}
			if tc.wantBulk > 0 && (ranOn[false] != 0 || ranOn[true] == 0) {
				t.Errorf("bulk batches ran %d on instances and %d on bulk instances; want all on bulk instances", ranOn[false], ranOn[true])
			}
			if tc.wantBulk == 0 && ranOn[false] == 0 {
				t.Errorf("without bulk instances no instance ran the bulk requests")
			}
			// The ledger prices the instances only.
			for _, mr := range v.e.Ledger().Report().Models {
				if mr.Instances != tc.instances {
					t.Errorf("ledger instances %d, want %d", mr.Instances, tc.instances)
				}
			}
			if err := v.e.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			for i, s := range opened {
				if got := s.closed.Load(); got != 1 {
					t.Errorf("session %d closed %d times, want 1", i, got)
				}
			}
		})
	}
}

func TestSetInstances(t *testing.T) {
	v := newEnv(t, &testRuntime{})
	if err := v.e.Load(t.Context(), config.Model{Name: "m", Path: "p", Instances: 1, BulkInstances: -1, MaxBatchSize: 8, WarmupRuns: -1}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		n       int
		want    int
		wantErr string
		closed  int32 // sessions closed so far
	}{
		{"scale up", 3, 3, "", 0},
		{"same", 3, 3, "", 0},
		{"scale down", 1, 1, "", 2},
		{"zero refused", 0, 1, infergate.EInvalid, 2},
		{"up again", 2, 2, "", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.e.SetInstances(t.Context(), "m", tc.n)
			if infergate.ErrorCode(err) != tc.wantErr && !(tc.wantErr == "" && err == nil) {
				t.Fatalf("SetInstances(%d) = %v, want %q", tc.n, err, tc.wantErr)
			}
			if got := v.e.Instances("m"); got != tc.want {
				t.Fatalf("%d instances, want %d", got, tc.want)
			}
			m, _ := v.e.Model("m")
			if got := m.Sched.Instances(); got != tc.want {
				t.Fatalf("scheduler has %d workers, want %d", got, tc.want)
			}
			if got := v.rt.closes.Load(); got != tc.closed {
				t.Fatalf("%d sessions closed, want %d", got, tc.closed)
			}
		})
	}
	if err := v.e.SetInstances(t.Context(), "nope", 2); infergate.ErrorCode(err) != infergate.ENotFound {
		t.Fatalf("unknown model: %v", err)
	}
	// The ledger prices the instance count from now on: 2 instances for
	// 10 s (the fake clock stood still before).
	v.clk.Advance(10 * time.Second)
	if r := v.e.Ledger().Report(); len(r.Models) != 1 || r.Models[0].Instances != 2 || r.Models[0].ProvisionedSeconds != 20 {
		t.Fatalf("ledger models %+v, want 2 instances provisioned 20 s", r.Models)
	}
}

func TestRecentP99(t *testing.T) {
	r := &recentLatency{}
	if d, n := r.p99AndReset(); d != 0 || n != 0 {
		t.Fatalf("empty: %v %d", d, n)
	}
	for i := 1; i <= 200; i++ {
		r.add(time.Duration(i) * time.Millisecond)
	}
	if d, n := r.p99AndReset(); d != 198*time.Millisecond || n != 200 {
		t.Fatalf("p99 %v of %d, want 198ms of 200", d, n)
	}
	if _, n := r.p99AndReset(); n != 0 {
		t.Fatalf("not reset: %d", n)
	}
	rec := recorder{m: metrics.New(prometheus.NewRegistry(), 1), l: cost.New(nil, 1), recent: r}
	rec.RecordRequest("m", infergate.ClassBulk, batching.OutcomeOK, time.Second, 0)
	rec.RecordRequest("m", infergate.ClassUrgent, batching.OutcomeExpired, time.Second, 0)
	rec.RecordRequest("m", infergate.ClassNormal, batching.OutcomeOK, time.Millisecond, time.Millisecond)
	if d, n := r.p99AndReset(); d != 2*time.Millisecond || n != 1 {
		t.Fatalf("recorded %v of %d, want only the served normal request", d, n)
	}
}
