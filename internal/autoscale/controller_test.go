package autoscale

import (
	"testing"
	"time"
)

func TestControllerUtilization(t *testing.T) {
	base := Config{MinInstances: 1, MaxInstances: 6} // target 0.6, tolerance 0.1
	tests := []struct {
		name      string
		cfg       Config
		instances int
		busy      float64 // busy instance-equivalents
		secs      int     // one-second samples after the baseline
		want      int
		trigger   string
	}{
		{name: "first sample has no data", cfg: base, instances: 2, busy: 2, secs: 0, want: 2, trigger: TriggerNoData},
		{name: "inside band above", cfg: base, instances: 4, busy: 4 * 0.6 * 1.05, secs: 5, want: 4, trigger: TriggerTolerance},
		{name: "inside band below", cfg: base, instances: 4, busy: 4 * 0.6 * 0.95, secs: 400, want: 4, trigger: TriggerTolerance},
		{name: "edge of band", cfg: base, instances: 4, busy: 4 * 0.6 * 1.1, secs: 5, want: 4, trigger: TriggerTolerance},
		{name: "above band", cfg: base, instances: 4, busy: 4 * 0.6 * 1.2, secs: 1, want: 5, trigger: TriggerUtilization},
		{name: "saturated", cfg: base, instances: 2, busy: 2, secs: 1, want: 4, trigger: TriggerUtilization},
		{name: "above band at max", cfg: base, instances: 6, busy: 6, secs: 1, want: 6, trigger: TriggerMax},
		{name: "up capped at max", cfg: base, instances: 4, busy: 4, secs: 1, want: 6, trigger: TriggerUtilization},
		{name: "below band in down cooldown", cfg: base, instances: 4, busy: 1.2, secs: 299, want: 4, trigger: TriggerCooldown},
		{name: "below band after down cooldown", cfg: base, instances: 4, busy: 1.2, secs: 300, want: 2, trigger: TriggerUtilization},
		{name: "below band at min", cfg: base, instances: 1, busy: 0.2, secs: 400, want: 1, trigger: TriggerMin},
		{name: "idle goes to min", cfg: base, instances: 3, busy: 0, secs: 300, want: 1, trigger: TriggerUtilization},
		{name: "below min", cfg: Config{MinInstances: 2, MaxInstances: 6}, instances: 0, busy: 0, secs: 0, want: 2, trigger: TriggerMin},
		{name: "above max", cfg: base, instances: 8, busy: 8, secs: 1, want: 6, trigger: TriggerMax},
		{name: "formula gives current", cfg: base, instances: 2, busy: 0.8, secs: 1, want: 2, trigger: TriggerSteady},
		{name: "tight band", cfg: Config{MaxInstances: 6, Tolerance: 0.01}, instances: 4, busy: 4 * 0.6 * 1.05, secs: 1, want: 5, trigger: TriggerUtilization},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustController(t, tt.cfg)
			d := last(newFeed().run(c, tt.secs, tt.busy, tt.instances, nil))
			if d.Desired != tt.want || d.Trigger != tt.trigger {
				t.Fatalf("got %d (%s), want %d (%s): %s %v", d.Desired, d.Trigger, tt.want, tt.trigger, d.Reason, d.Figures)
			}
			if d.Current != tt.instances || d.Reason == "" || d.Figures["current"] != float64(tt.instances) || d.Figures["desired"] != float64(d.Desired) {
				t.Errorf("decision lacks its figures: %+v", d)
			}
			if tt.secs > 0 && d.Figures["busy_instances"] == 0 && tt.busy > 0 {
				t.Errorf("figures lack busy_instances: %v", d.Figures)
			}
		})
	}
}

func TestControllerUpCooldown(t *testing.T) {
	c := mustController(t, Config{MaxInstances: 10})
	f := newFeed()
	f.run(c, 1, 4, 4, nil) // saturated at 4: wants 7
	c.Applied(4, f.now)    // but a change to 4 was just made
	// Still saturated at 4 (wants 7): held for the whole cooldown.
	for i, d := range f.run(c, 59, 4, 4, nil) {
		if d.Change() || d.Trigger != TriggerCooldown {
			t.Fatalf("second %d after the change: got %d (%s), want a cooldown hold", i+1, d.Desired, d.Trigger)
		}
		if want := float64(59 - i); d.Figures["cooldown_left_s"] != want {
			t.Fatalf("cooldown_left_s = %v, want %v", d.Figures["cooldown_left_s"], want)
		}
	}
	if d := last(f.run(c, 1, 4, 4, nil)); d.Desired != 7 || d.Trigger != TriggerUtilization {
		t.Fatalf("after the cooldown: got %d (%s), want 7 (utilization)", d.Desired, d.Trigger)
	}
}

func TestControllerLatency(t *testing.T) {
	const slo = 200 * time.Millisecond
	tests := []struct {
		name      string
		cfg       Config
		sinceUp   time.Duration // time since the last scale-up (0: none)
		instances int
		busy      float64
		p99, qd   time.Duration
		want      int
		trigger   string
	}{
		{name: "p99 over slo", instances: 2, busy: 1.2, p99: 300 * time.Millisecond, want: 3, trigger: TriggerLatency},
		{name: "queue delay over slo", instances: 2, busy: 1.2, qd: 300 * time.Millisecond, want: 3, trigger: TriggerLatency},
		{name: "within slo", instances: 2, busy: 1.2, p99: 150 * time.Millisecond, want: 2, trigger: TriggerTolerance},
		{name: "by formula when more", instances: 2, busy: 2, p99: time.Second, want: 4, trigger: TriggerLatency},
		{name: "bypasses up cooldown", sinceUp: 30 * time.Second, instances: 2, busy: 1.2, p99: time.Second, want: 3, trigger: TriggerLatency},
		{name: "latency cooldown", sinceUp: 29 * time.Second, instances: 2, busy: 1.2, p99: time.Second, want: 2, trigger: TriggerCooldown},
		{name: "custom latency cooldown", cfg: Config{LatencyCooldown: 10 * time.Second}, sinceUp: 10 * time.Second, instances: 2, busy: 1.2, p99: time.Second, want: 3, trigger: TriggerLatency},
		{name: "at max", instances: 4, busy: 2.4, p99: time.Second, want: 4, trigger: TriggerMax},
		{name: "no slo", cfg: Config{SLO: -1}, instances: 2, busy: 1.2, p99: time.Hour, want: 2, trigger: TriggerTolerance},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.MaxInstances = 4
			if cfg.SLO == 0 {
				cfg.SLO = slo
			} else if cfg.SLO < 0 {
				cfg.SLO = 0
			}
			c := mustController(t, cfg)
			f := newFeed()
			f.run(c, 1, tt.busy, tt.instances, nil)
			if tt.sinceUp > 0 {
				c.Observe(f.next(time.Second, tt.busy, tt.instances-1))
				c.Applied(tt.instances, f.now)
				f.run(c, int(tt.sinceUp/time.Second)-1, tt.busy, tt.instances, nil)
			}
			d := c.Observe(func() Sample {
				s := f.next(time.Second, tt.busy, tt.instances)
				s.P99, s.QueueDelay = tt.p99, tt.qd
				return s
			}())
			if d.Desired != tt.want || d.Trigger != tt.trigger {
				t.Fatalf("got %d (%s), want %d (%s): %s", d.Desired, d.Trigger, tt.want, tt.trigger, d.Reason)
			}
			if cfg.SLO > 0 && (d.Figures["slo_ms"] != 200 || d.Figures["p99_ms"] != float64(tt.p99.Milliseconds())) {
				t.Errorf("latency figures: %v", d.Figures)
			}
		})
	}
}

func TestControllerStabilization(t *testing.T) {
	c := mustController(t, Config{MaxInstances: 6})
	f := newFeed()
	f.run(c, 400, 2.4, 4, nil) // at target for longer than the down cooldown
	drop := f.now
	var down *Decision
	for _, d := range f.run(c, 400, 0.3, 4, nil) {
		if d.Change() {
			down = &d
			break
		}
	}
	if down == nil {
		t.Fatal("no scale-down within 400s of the drop")
	}
	if since := down.Time.Sub(drop); since < 300*time.Second {
		t.Fatalf("scaled down %s after the drop, inside the 300s stabilization window", since)
	}
	if down.Desired != int(down.Figures["stabilized_recommendation"]) || down.Desired >= 4 {
		t.Fatalf("scale-down to %d, want the stabilized recommendation %v", down.Desired, down.Figures["stabilized_recommendation"])
	}
}

// After a change, a scale-down waits the full cooldown even when every
// recommendation is low.
func TestControllerDownCooldownAfterChange(t *testing.T) {
	c := mustController(t, Config{MaxInstances: 6, ScaleDownStabilization: time.Second})
	f := newFeed()
	f.run(c, 10, 0.3, 4, nil)
	c.Applied(4, f.now) // say an operator set 4
	for i, d := range f.run(c, 299, 0.3, 4, nil) {
		if d.Change() {
			t.Fatalf("scaled down %ds after a change", i+1)
		}
	}
	if d := last(f.run(c, 1, 0.3, 4, nil)); d.Desired != 1 {
		t.Fatalf("after the cooldown: got %d (%s), want 1", d.Desired, d.Trigger)
	}
}

func TestControllerBacklog(t *testing.T) {
	job := func(items int, deadlineIn time.Duration, rate, expiry float64) Backlog {
		return Backlog{ItemsLeft: items, Deadline: t0.Add(deadlineIn), ItemsPerSecPerInstance: rate, ExpiryCost: expiry}
	}
	tests := []struct {
		name      string
		instances int
		busy      float64 // busy instance-equivalents
		secs      int
		jobs      []Backlog // deadlines relative to the last sample
		applied   bool      // a change was applied just before
		want      int
		trigger   string
	}{
		{name: "no jobs", instances: 2, busy: 1.2, want: 2, trigger: TriggerTolerance},
		{name: "on track", instances: 2, busy: 1.2, jobs: []Backlog{job(1000, 1000*time.Second, 1, 0)}, want: 2, trigger: TriggerTolerance},
		{name: "would miss, missing unacceptable", instances: 2, busy: 1.2, jobs: []Backlog{job(10000, 2000*time.Second, 1, 0)}, want: 5, trigger: TriggerBacklog},
		{name: "would miss, cheaper than missing", instances: 2, busy: 1.2, jobs: []Backlog{job(10000, 2000*time.Second, 1, 5)}, want: 5, trigger: TriggerBacklog},
		{name: "would miss, dearer than missing", instances: 2, busy: 1.2, jobs: []Backlog{job(10000, 2000*time.Second, 1, 1)}, want: 2, trigger: TriggerTolerance},
		{name: "beyond max, priced", instances: 2, busy: 1.2, jobs: []Backlog{job(100000, 2000*time.Second, 1, 1000)}, want: 2, trigger: TriggerTolerance},
		{name: "beyond max, missing unacceptable", instances: 2, busy: 1.2, jobs: []Backlog{job(100000, 2000*time.Second, 1, 0)}, want: 6, trigger: TriggerBacklog},
		{name: "unknown rate", instances: 2, busy: 1.2, jobs: []Backlog{job(10000, 2000*time.Second, 0, 0)}, want: 2, trigger: TriggerTolerance},
		{name: "past deadline", instances: 2, busy: 1.2, jobs: []Backlog{job(10000, -time.Second, 1, 0)}, want: 2, trigger: TriggerTolerance},
		{name: "together they miss", instances: 2, busy: 1.2,
			jobs: []Backlog{job(3000, 2000*time.Second, 1, 0), job(2000, 2000*time.Second, 1, 0)}, want: 3, trigger: TriggerBacklog},
		{name: "earliest deadline first", instances: 2, busy: 1.2,
			jobs: []Backlog{job(1000, 5000*time.Second, 1, 0), job(3000, 1000*time.Second, 1, 0)}, want: 3, trigger: TriggerBacklog},
		{name: "up cooldown", instances: 2, busy: 1.2, applied: true, jobs: []Backlog{job(10000, 2000*time.Second, 1, 0)}, want: 2, trigger: TriggerCooldown},
		{name: "floor for scale-down", instances: 4, busy: 0.3, secs: 400,
			jobs: []Backlog{job(3000, 1200*time.Second, 1, 0)}, want: 3, trigger: TriggerUtilization},
		{name: "utilization wins when higher", instances: 2, busy: 2, jobs: []Backlog{job(6000, 2000*time.Second, 1, 0)}, want: 4, trigger: TriggerUtilization},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Instances cost $1/h: 3 more for 2000s cost $1.67.
			c := mustController(t, Config{MaxInstances: 6, InstancePricePerHour: 1})
			f := newFeed()
			secs := max(tt.secs, 1)
			end := t0.Add(time.Duration(secs) * time.Second)
			jobs := make([]Backlog, len(tt.jobs))
			for i, j := range tt.jobs {
				j.Deadline = end.Add(j.Deadline.Sub(t0))
				jobs[i] = j
			}
			withJobs := func(s *Sample) { s.Backlog = jobs }
			f.run(c, secs-1, tt.busy, tt.instances, withJobs)
			if tt.applied {
				c.Applied(tt.instances, f.now)
			}
			s := f.next(time.Second, tt.busy, tt.instances)
			withJobs(&s)
			d := c.Observe(s)
			if d.Desired != tt.want || d.Trigger != tt.trigger {
				t.Fatalf("got %d (%s), want %d (%s): %s %v", d.Desired, d.Trigger, tt.want, tt.trigger, d.Reason, d.Figures)
			}
			if len(jobs) > 0 && d.Figures["backlog_jobs"] != float64(len(jobs)) {
				t.Errorf("figures lack the backlog: %v", d.Figures)
			}
		})
	}
}
