package autoscale

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
)

// TestScalerLoadStep runs the Scaler against a simulated model through a
// step from 1x to Nx load and back, one-second ticks on a fake clock.
func TestScalerLoadStep(t *testing.T) {
	const (
		base    = 0.5 // 1x load, in instance-equivalents
		upAt    = 120 * time.Second
		downAt  = 1000 * time.Second
		runTime = 2600 * time.Second
		slo     = 200 * time.Millisecond
	)
	tests := []struct {
		name  string
		max   int
		mult  float64
		noise float64 // relative per-tick load noise
	}{
		{name: "4x", max: 6, mult: 4},
		{name: "4x noisy", max: 6, mult: 4, noise: 0.15},
		{name: "8x capped at max", max: 5, mult: 8},
		{name: "3x noisy", max: 6, mult: 3, noise: 0.1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{MinInstances: 1, MaxInstances: tt.max, SLO: slo}
			clk := clock.NewFake(t0)
			m := &fakeModel{instances: 1, load: base}
			rec := &fakeRecorder{}
			s, err := NewScaler("m", cfg, m, m, rec, clk, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg = s.Controller().Config()
			rng := rand.New(rand.NewPCG(12345, 1))
			need := min(int(math.Ceil(base*tt.mult/cfg.TargetUtilization)), tt.max) // instances the high load needs
			var reachedAt, sloAt time.Duration = -1, -1
			var atMax bool
			for el := time.Second; el <= runTime; el += time.Second {
				load := base
				if el > upAt && el <= downAt {
					load = base * tt.mult
				}
				m.setLoad(load * (1 + tt.noise*(2*rng.Float64()-1)))
				m.advance(time.Second)
				clk.Advance(time.Second)
				d, err := s.Step(t.Context())
				if err != nil {
					t.Fatalf("at %s: %v", el, err)
				}
				n, _ := m.state()
				if n > tt.max || n < cfg.MinInstances {
					t.Fatalf("at %s: %d instances, outside [%d, %d]", el, n, cfg.MinInstances, tt.max)
				}
				if el > upAt && el <= downAt {
					if reachedAt < 0 && n >= need {
						reachedAt = el - upAt
					}
					if sloAt < 0 && n > 1 && m.p99() <= slo {
						sloAt = el - upAt
					}
					atMax = atMax || (d.Trigger == TriggerMax && n == tt.max)
				}
			}

			evs := rec.all()
			if len(evs) == 0 {
				t.Fatal("no scaling events")
			}
			// Direction changes: at most one up-phase, then one down-phase.
			var phases []string
			var prev time.Time
			var prevKind string
			for i, e := range evs {
				if e.Outcome != OutcomeApplied {
					t.Fatalf("event %d: outcome %q", i, e.Outcome)
				}
				if len(phases) == 0 || phases[len(phases)-1] != e.Kind {
					phases = append(phases, e.Kind)
				}
				from, _ := strconv.Atoi(e.From)
				to, _ := strconv.Atoi(e.To)
				if (e.Kind == KindScaleUp) != (to > from) || e.Figures == nil || e.Message == "" || e.Model != "m" {
					t.Fatalf("event %d inconsistent: %+v", i, e)
				}
				if i > 0 { // cooldowns between changes
					gap := e.Time.Sub(prev)
					var least time.Duration
					switch {
					case e.Kind == KindScaleDown:
						least = cfg.ScaleDownCooldown
					case e.Trigger == TriggerLatency && prevKind == KindScaleUp:
						least = cfg.LatencyCooldown
					case e.Trigger != TriggerLatency:
						least = cfg.ScaleUpCooldown
					}
					if gap < least {
						t.Errorf("event %d (%s %s %s->%s) %s after the previous change, want >= %s", i, e.Kind, e.Trigger, e.From, e.To, gap, least)
					}
				}
				prev, prevKind = e.Time, e.Kind
				t.Logf("%6s %-10s %-12s %s->%s", e.Time.Sub(t0), e.Kind, e.Trigger, e.From, e.To)
			}
			if len(phases) > 2 || phases[0] != KindScaleUp {
				t.Errorf("direction phases %v, want one up-phase then at most one down-phase", phases)
			}
			if firstDown := firstOf(evs, KindScaleDown); firstDown >= 0 && evs[firstDown].Time.Sub(t0) < downAt+cfg.ScaleDownStabilization {
				t.Errorf("first scale-down at %s, before the load drop (%s) plus the stabilization window", evs[firstDown].Time.Sub(t0), downAt)
			}
			// Up fast enough: the latency trigger restores the SLO within two
			// of its steps, and the count the load needs is reached within
			// three up-cooldowns.
			if sloAt < 0 || sloAt > 2*cfg.LatencyCooldown+2*time.Second {
				t.Errorf("p99 back under the SLO %s after the step, want <= %s", sloAt, 2*cfg.LatencyCooldown+2*time.Second)
			}
			if reachedAt < 0 || reachedAt > 3*cfg.ScaleUpCooldown {
				t.Errorf("reached %d instances %s after the step, want <= %s", need, reachedAt, 3*cfg.ScaleUpCooldown)
			}
			if need == tt.max && !atMax {
				t.Error("no decision held at max although the load needs more")
			}
			// And back down to the minimum once the load is gone.
			if n, _ := m.state(); n != cfg.MinInstances {
				t.Errorf("ended with %d instances, want the minimum %d", n, cfg.MinInstances)
			}
		})
	}
}

func firstOf(evs []infergate.Event, kind string) int {
	for i, e := range evs {
		if e.Kind == kind {
			return i
		}
	}
	return -1
}
