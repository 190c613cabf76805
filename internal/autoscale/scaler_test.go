package autoscale

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/infergate/infergate/internal/clock"
)

func newTestScaler(tb testing.TB, cfg Config, m *fakeModel) (*Scaler, *clock.Fake, *fakeRecorder, *prometheus.Registry) {
	tb.Helper()
	clk := clock.NewFake(t0)
	rec := &fakeRecorder{}
	reg := prometheus.NewRegistry()
	s, err := NewScaler("m", cfg, m, m, rec, clk, reg, nil)
	if err != nil {
		tb.Fatalf("NewScaler: %v", err)
	}
	return s, clk, rec, reg
}

// tick runs the model and the clock one second and steps the scaler.
func tick(ctx context.Context, s *Scaler, clk *clock.Fake, m *fakeModel) (Decision, error) {
	m.advance(time.Second)
	clk.Advance(time.Second)
	return s.Step(ctx)
}

func TestScalerStep(t *testing.T) {
	boom := errors.New("no capacity")
	tests := []struct {
		name      string
		setErr    error
		sampleErr error
		wantErr   error
		events    []string // kind/outcome/from/to of the events
		instances int      // after the step
	}{
		{name: "applied", events: []string{"scale_up/applied/2/4"}, instances: 4},
		{name: "target fails", setErr: boom, wantErr: boom, events: []string{"scale_up/failed/2/4"}, instances: 2},
		{name: "source fails", sampleErr: boom, wantErr: boom, instances: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &fakeModel{instances: 2, load: 4} // saturated: wants 4
			s, clk, rec, _ := newTestScaler(t, Config{MaxInstances: 6}, m)
			if _, err := tick(t.Context(), s, clk, m); err != nil { // baseline
				t.Fatal(err)
			}
			m.setErr, m.sampleErr = tt.setErr, tt.sampleErr
			d, err := tick(t.Context(), s, clk, m)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var got []string
			for _, e := range rec.all() {
				got = append(got, strings.Join([]string{e.Kind, e.Outcome, e.From, e.To}, "/"))
				if e.Trigger != d.Trigger || e.Figures["utilization"] == 0 || e.Message == "" || e.Model != "m" {
					t.Errorf("event lacks its decision: %+v", e)
				}
				if e.Outcome == OutcomeFailed && !strings.Contains(e.Message, boom.Error()) {
					t.Errorf("failed event does not say why: %q", e.Message)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.events, ",") {
				t.Errorf("events %v, want %v", got, tt.events)
			}
			if n, _ := m.state(); n != tt.instances {
				t.Errorf("instances %d, want %d", n, tt.instances)
			}
		})
	}
}

// A failed change does not start the cooldowns: once the Target works
// again (after the retry backoff) the scale-up goes through at once,
// where an applied change would have held it for ScaleUpCooldown.
func TestScalerFailedChangeNotApplied(t *testing.T) {
	m := &fakeModel{instances: 2, load: 4}
	s, clk, rec, _ := newTestScaler(t, Config{MaxInstances: 6}, m)
	ctx := t.Context()
	if _, err := tick(ctx, s, clk, m); err != nil {
		t.Fatal(err)
	}
	m.setErr = errors.New("no capacity")
	if _, err := tick(ctx, s, clk, m); err == nil {
		t.Fatal("Step: no error from a failing Target")
	}
	// Within the backoff: still wanted, not attempted.
	for range 4 {
		d, err := tick(ctx, s, clk, m)
		if err != nil || !d.Change() || d.Trigger != TriggerUtilization {
			t.Fatalf("during the backoff: %+v, %v", d, err)
		}
	}
	if _, calls := m.state(); calls != 1 {
		t.Fatalf("SetInstances called %d times during the backoff, want 1", calls)
	}
	m.setErr = nil
	d, err := tick(ctx, s, clk, m)
	if err != nil || d.Desired != 4 || d.Trigger != TriggerUtilization {
		t.Fatalf("retry: %+v, %v", d, err)
	}
	if n, _ := m.state(); n != 4 {
		t.Fatalf("instances %d after the retry, want 4", n)
	}
	evs := rec.all()
	if len(evs) != 2 || evs[0].Outcome != OutcomeFailed || evs[1].Outcome != OutcomeApplied {
		t.Fatalf("events %+v, want failed then applied", evs)
	}
	// Now the change is applied: the cooldown holds the next one.
	m.setLoad(6)
	if d, _ := tick(ctx, s, clk, m); d.Change() {
		t.Fatalf("scaled again right after an applied change: %+v", d)
	}
}

func TestScalerMetrics(t *testing.T) {
	m := &fakeModel{instances: 4, load: 1.2} // utilization 0.3: wants 2, after the down cooldown
	s, clk, _, reg := newTestScaler(t, Config{MaxInstances: 6}, m)
	for range 2 {
		if _, err := tick(t.Context(), s, clk, m); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP infergate_autoscale_busy_instances Smoothed busy instance-equivalents of the model (busy seconds per second); additive across pods.
# TYPE infergate_autoscale_busy_instances gauge
infergate_autoscale_busy_instances{model="m"} 1.2
# HELP infergate_autoscale_desired_instances Instances the autoscaler wants for the model (its last decision, within min and max).
# TYPE infergate_autoscale_desired_instances gauge
infergate_autoscale_desired_instances{model="m"} 4
# HELP infergate_autoscale_utilization Smoothed busy share of the model's instance time (smoothed busy instances / instances).
# TYPE infergate_autoscale_utilization gauge
infergate_autoscale_utilization{model="m"} 0.3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}

	// A second model registers beside it; the same model twice is an error.
	if _, err := NewScaler("other", Config{MaxInstances: 2}, m, m, nil, clk, reg, nil); err != nil {
		t.Errorf("second model: %v", err)
	}
	if _, err := NewScaler("m", Config{MaxInstances: 2}, m, m, nil, clk, reg, nil); err == nil {
		t.Error("same model registered twice: no error")
	}
	if _, err := NewScaler("x", Config{MaxInstances: 0}, m, m, nil, clk, nil, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("invalid config: err = %v", err)
	}
}

func TestScalerRun(t *testing.T) {
	m := &fakeModel{instances: 0, calls: make(chan int, 1)} // below the minimum
	s, clk, rec, _ := newTestScaler(t, Config{MinInstances: 2, MaxInstances: 6}, m)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		s.Run(ctx, time.Second)
		close(done)
	}()
	waitFor(t, "the tick timer", func() bool { return clk.Timers() == 1 })
	clk.Advance(time.Second)
	select {
	case n := <-m.calls:
		if n != 2 {
			t.Fatalf("SetInstances(%d), want 2", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not scale within 10s of wall time")
	}
	waitFor(t, "the event", func() bool { return len(rec.all()) == 1 })
	if e := rec.all()[0]; e.Trigger != TriggerMin || e.Outcome != OutcomeApplied || e.To != "2" {
		t.Errorf("event %+v", e)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
