package switcher

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/events"
	"github.com/infergate/infergate/internal/perfmodel"
)

// fakeTarget is a scheduler whose lanes answer at once with controllable
// figures: how long a request of each lane queued and ran, in what batch,
// and whether it failed.
type fakeTarget struct {
	mu    sync.Mutex
	pol   [infergate.NumClasses]batching.Policy
	lat   *perfmodel.Model
	inst  int
	queue [infergate.NumClasses]time.Duration
	batch [infergate.NumClasses]int
	fail  [infergate.NumClasses]error
	calls [infergate.NumClasses]int
	// A lane's batch holds one request and the arrivals in its queue delay
	// at the lane's rate (its share so far this second of the rate set by
	// the harness), as a real lane would.
	cur  [infergate.NumClasses]float64
	rate float64
}

func newFakeTarget() *fakeTarget {
	f := &fakeTarget{lat: perfmodel.New(), inst: 2}
	f.pol[infergate.ClassUrgent] = batching.Policy{Kind: batching.Hybrid, MaxBatchSize: 8, MaxQueueDelay: time.Millisecond, Mode: infergate.ModeRealtime}
	f.pol[infergate.ClassNormal] = batching.Policy{Kind: batching.Hybrid, MaxBatchSize: 32, MaxQueueDelay: 5 * time.Millisecond, Mode: infergate.ModeHybrid}
	f.pol[infergate.ClassBulk] = batching.Policy{Kind: batching.Hybrid, MaxBatchSize: 64, MaxQueueDelay: 20 * time.Millisecond, Mode: infergate.ModeBatch}
	// A measured curve: 1 ms per batch plus 0.1 ms per item.
	for _, n := range []int{1, 2, 4, 8, 16, 32, 64} {
		f.lat.Observe(n, time.Millisecond+time.Duration(n)*100*time.Microsecond)
	}
	f.queue = [infergate.NumClasses]time.Duration{100 * time.Microsecond, 3 * time.Millisecond, 10 * time.Millisecond}
	return f
}

func (f *fakeTarget) SubmitLane(_ context.Context, _, lane infergate.Class, _ []infergate.Tensor, items int, _ time.Duration) (*batching.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[lane]++
	if err := f.fail[lane]; err != nil {
		return nil, err
	}
	f.cur[lane]++
	n := f.batch[lane]
	if n == 0 {
		p := f.pol[lane]
		laneRate := f.rate * f.cur[lane] / (f.cur[0] + f.cur[1] + f.cur[2])
		n = min(max(int(math.Round(1+laneRate*p.MaxQueueDelay.Seconds())), 1), p.MaxBatchSize)
	}
	compute, _ := f.lat.Estimate(n)
	return &batching.Response{Queued: f.queue[lane], Compute: compute, BatchSize: n}, nil
}

func (f *fakeTarget) Policy(c infergate.Class) batching.Policy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pol[c]
}

func (f *fakeTarget) SetPolicy(c infergate.Class, p batching.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pol[c] = p
	return nil
}

func (f *fakeTarget) Latency() *perfmodel.Model { return f.lat }
func (f *fakeTarget) Instances() int            { return f.inst }

func (f *fakeTarget) set(fn func(f *fakeTarget)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// second starts a second of arrivals at rate.
func (f *fakeTarget) second(rate float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate, f.cur = rate, [infergate.NumClasses]float64{}
}

func (f *fakeTarget) lanes() [infergate.NumClasses]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type harness struct {
	t   *testing.T
	f   *fakeTarget
	clk *clock.Fake
	ev  *events.Log
	sw  *Switcher
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	f := newFakeTarget()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	ev := events.New(clk, nil, nil, 0)
	sw, err := New("m", f, map[infergate.Class]Config{infergate.ClassNormal: cfg}, ev, clk, 36, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The normal class starts in realtime here, as a low-load deployment
	// would pin it.
	if err := sw.Pin(infergate.ClassNormal, infergate.ModeRealtime); err != nil {
		t.Fatal(err)
	}
	if err := sw.Unpin(infergate.ClassNormal); err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, f: f, clk: clk, ev: ev, sw: sw}
}

// run sends rps normal requests per second for d, one tick per second.
func (h *harness) run(rps int, d time.Duration) {
	h.t.Helper()
	for range int(d / time.Second) {
		h.f.second(float64(rps))
		for range rps {
			_, _ = h.sw.Submit(h.t.Context(), infergate.ClassNormal, nil, 1, 0)
		}
		h.clk.Advance(time.Second)
		h.sw.Tick()
	}
}

func (h *harness) kinds() []string {
	var out []string
	for _, e := range h.ev.List(0, 0, "") {
		if e.Kind != "pin" && e.Kind != "unpin" {
			out = append(out, e.Kind+":"+e.To)
		}
	}
	return out
}

func (h *harness) mode() infergate.Mode { return h.sw.States()[0].Mode }

func baseConfig() Config {
	return Config{SLO: 50 * time.Millisecond, LowRPS: 100, HighRPS: 400, SwitchDelay: 5 * time.Second, BakeTime: 3 * time.Second}
}

// TestLoadStepsSwitchGraduallyWithoutFlapping: a load that steps from low
// to high and back moves the class realtime -> hybrid -> realtime, each
// through every share, once per step change.
func TestLoadStepsSwitchGraduallyWithoutFlapping(t *testing.T) {
	h := newHarness(t, baseConfig())
	h.run(50, 30*time.Second) // 5%: stays realtime
	if m := h.mode(); m != infergate.ModeRealtime {
		t.Fatalf("mode at low load %s", m)
	}
	h.run(800, 60*time.Second) // 80%
	if m := h.mode(); m != infergate.ModeHybrid {
		for _, e := range h.ev.List(0, 0, "") {
			t.Logf("%s %s %v %s", e.Kind, e.To, e.Figures, e.Message)
		}
		t.Fatalf("mode at high load %s, events %v", m, h.kinds())
	}
	h.run(50, 60*time.Second) // back to 5%
	if m := h.mode(); m != infergate.ModeRealtime {
		for _, e := range h.ev.List(0, 0, "") {
			t.Logf("%s %s %v %s", e.Kind, e.To, e.Figures, e.Message)
		}
		t.Fatalf("mode back at low load %s, events %v", m, h.kinds())
	}
	want := []string{
		"switch_start:hybrid", "switch_step:hybrid", "switch_step:hybrid", "switch_step:hybrid", "switch_done:hybrid",
		"switch_start:realtime", "switch_step:realtime", "switch_step:realtime", "switch_step:realtime", "switch_done:realtime",
	}
	got := h.kinds()
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
	// The first switch says why, with the figures and the saving the
	// latency model predicts for hybrid.
	start := h.ev.List(0, 0, "")[2]
	if start.Trigger != "load_high" || start.Figures["rate_rps"] != 800 || start.Figures["expected_saving"] <= 0 {
		t.Fatalf("switch_start %+v", start)
	}
	// Every step split the traffic as announced: hybrid's lane served
	// 20%+50%+80% of 3 s at 800 rps, plus the rest of the high phase.
	calls := h.f.lanes()
	if calls[infergate.ClassNormal] == 0 || calls[infergate.ClassUrgent] == 0 || calls[infergate.ClassBulk] != 0 {
		t.Fatalf("lane calls %v", calls)
	}
}

// TestForcedBadSwitchRollsBack: an operator forces hybrid with a 200 ms
// queue delay against a 50 ms SLO; the first step shows the new share's
// p99 over the SLO, the switch rolls back and the lane's policy is restored.
func TestForcedBadSwitchRollsBack(t *testing.T) {
	h := newHarness(t, baseConfig())
	h.run(50, 3*time.Second)
	before := h.f.Policy(infergate.ClassNormal)
	bad := batching.Policy{Kind: batching.Hybrid, MaxBatchSize: 32, MaxQueueDelay: 200 * time.Millisecond}
	if err := h.sw.Force(infergate.ClassNormal, infergate.ModeHybrid, &bad); err != nil {
		t.Fatal(err)
	}
	if got := h.f.Policy(infergate.ClassNormal).MaxQueueDelay; got != 200*time.Millisecond {
		t.Fatalf("forced setting not applied: %v", got)
	}
	h.f.set(func(f *fakeTarget) { f.queue[infergate.ClassNormal] = 200 * time.Millisecond })
	h.run(50, 10*time.Second)
	got := h.kinds()
	if len(got) != 2 || got[0] != "switch_start:hybrid" || got[1] != "rollback:realtime" {
		t.Fatalf("events %v, want a start and a rollback", got)
	}
	if m := h.mode(); m != infergate.ModeRealtime {
		t.Fatalf("mode after rollback %s", m)
	}
	if p := h.f.Policy(infergate.ClassNormal); p.MaxQueueDelay != before.MaxQueueDelay {
		t.Fatalf("policy not restored: %+v", p)
	}
	rb := h.ev.List(0, 0, "")
	last := rb[len(rb)-1]
	if last.Figures["new_p99_ms"] < 200 || last.Figures["share"] != 0.2 {
		t.Fatalf("rollback figures %v", last.Figures)
	}
	// The same switch is held off for a while even with a trigger.
	h.run(800, 20*time.Second)
	if m := h.mode(); m != infergate.ModeRealtime {
		t.Fatalf("switched again during the hold: %v", h.kinds())
	}
}

// TestRegression covers each rollback rule in isolation.
func TestRegression(t *testing.T) {
	sw := &Switcher{}
	cc := &classCtl{cfg: baseConfig()}
	cc.cfg.defaults()
	old := Figures{Requests: 100, P99MS: 2, ErrorRate: 0, CostPer1K: 1}
	tests := []struct {
		name     string
		cur      Figures
		expected float64
		bad      bool
	}{
		{"same", Figures{Requests: 100, P99MS: 2, CostPer1K: 1}, 0, false},
		{"slower but within the SLO", Figures{Requests: 100, P99MS: 40, CostPer1K: 0.5}, 1, false},
		{"over the SLO", Figures{Requests: 100, P99MS: 60, CostPer1K: 0.5}, 1, true},
		{"errors", Figures{Requests: 100, Errors: 5, ErrorRate: 0.05, P99MS: 2, CostPer1K: 1}, 1, true},
		{"a stray error", Figures{Requests: 10000, Errors: 1, ErrorRate: 0.0001, P99MS: 2, CostPer1K: 1}, 1, false},
		{"dearer, nothing predicted", Figures{Requests: 100, P99MS: 2, CostPer1K: 1.2}, 0, true},
		{"dearer than old, cheaper predicted", Figures{Requests: 100, P99MS: 2, CostPer1K: 1.2}, 0.5, true},
		{"dearer as predicted (a trade)", Figures{Requests: 100, P99MS: 2, CostPer1K: 1.8}, 1.7, false},
		{"a trade, 40% over the prediction", Figures{Requests: 100, P99MS: 2, CostPer1K: 2.38}, 1.7, false},
		{"a trade, 60% over the prediction", Figures{Requests: 100, P99MS: 2, CostPer1K: 2.72}, 1.7, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := sw.regression(cc, old, tc.cur, tc.expected) != ""; got != tc.bad {
				t.Fatalf("regression = %v, want %v (%q)", got, tc.bad, sw.regression(cc, old, tc.cur, tc.expected))
			}
		})
	}
}

func TestPinHoldsAgainstTriggers(t *testing.T) {
	h := newHarness(t, baseConfig())
	if err := h.sw.Pin(infergate.ClassNormal, infergate.ModeRealtime); err != nil {
		t.Fatal(err)
	}
	h.run(800, 30*time.Second)
	if m := h.mode(); m != infergate.ModeRealtime {
		t.Fatalf("pinned class switched: %v", h.kinds())
	}
	if err := h.sw.Force(infergate.ClassNormal, infergate.ModeRealtime, nil); infergate.ErrorCode(err) != infergate.EConflict {
		t.Fatalf("forcing the current mode: %v", err)
	}
	if err := h.sw.Pin(infergate.ClassUrgent, infergate.ModeHybrid); infergate.ErrorCode(err) != infergate.ENotFound {
		t.Fatalf("pinning an uncontrolled class: %v", err)
	}
	if err := h.sw.Pin(infergate.ClassNormal, "turbo"); infergate.ErrorCode(err) != infergate.EInvalid {
		t.Fatalf("pinning an unknown mode: %v", err)
	}
}

// TestSplitFollowsShare: the share routed to the new lane is the step's
// share within a request or two over any count.
func TestSplitFollowsShare(t *testing.T) {
	for _, share := range []float64{0.2, 0.5, 0.8} {
		f := newFakeTarget()
		sw, err := New("m", f, map[infergate.Class]Config{infergate.ClassNormal: baseConfig()}, nil, clock.NewFake(time.Unix(0, 0)), 1, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		cc := sw.ctl[infergate.ClassNormal]
		cc.route.Store(newRoute(infergate.ClassNormal, infergate.ClassUrgent, share, 0))
		for range 1000 {
			_, _ = sw.Submit(t.Context(), infergate.ClassNormal, nil, 1, 0)
		}
		got := float64(f.lanes()[infergate.ClassUrgent]) / 1000
		if math.Abs(got-share) > 0.005 {
			t.Errorf("share %v: %v of requests went to the new lane", share, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", baseConfig(), true},
		{"derived thresholds", Config{SLO: time.Second}, true},
		{"no slo", Config{}, false},
		{"low above high", Config{SLO: time.Second, LowRPS: 5, HighRPS: 4}, false},
		{"steps not increasing", Config{SLO: time.Second, Steps: []float64{0.5, 0.2, 1}}, false},
		{"last step not 1", Config{SLO: time.Second, Steps: []float64{0.5}}, false},
		{"cost trigger 1", Config{SLO: time.Second, CostTrigger: 1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
		})
	}
	if _, err := New("m", newFakeTarget(), map[infergate.Class]Config{infergate.ClassBulk: baseConfig()}, nil, nil, 1, nil, nil); err == nil {
		t.Fatal("bulk class accepted")
	}
}

// TestDerivedThresholds: with no thresholds configured, they follow the
// realtime capacity measured by the latency model.
func TestDerivedThresholds(t *testing.T) {
	f := newFakeTarget()
	sw, err := New("m", f, map[infergate.Class]Config{infergate.ClassNormal: {SLO: time.Second}}, nil, clock.NewFake(time.Unix(0, 0)), 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sw.Tick()
	st := sw.States()[0]
	// 2 instances / 1.1 ms per batch of one.
	want := 2 / 0.0011
	if math.Abs(st.HighRPS-want/2) > 1 || math.Abs(st.LowRPS-want/5) > 1 {
		t.Fatalf("thresholds %v..%v, want %v..%v", st.LowRPS, st.HighRPS, want/5, want/2)
	}
}
