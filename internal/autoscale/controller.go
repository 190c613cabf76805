package autoscale

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Sample is one observation of a model, taken every tick.
type Sample struct {
	Time time.Time
	// Instances is the current instance count.
	Instances int
	// BusySeconds is the cumulative busy time of the model's instances, a
	// monotonic counter; the controller diffs it. A decrease is taken as
	// a counter reset.
	BusySeconds float64
	// P99 is the recent p99 latency of the real-time classes (0 = unknown).
	P99 time.Duration
	// QueueDelay is the age of the oldest queued real-time request, or the
	// recent queue-delay p99 (0 = unknown).
	QueueDelay time.Duration
	// Backlog lists the model's open batch jobs.
	Backlog []Backlog
}

// Backlog is one open batch job.
type Backlog struct {
	ItemsLeft int
	// Deadline is the end of the job's completion window.
	Deadline time.Time
	// ItemsPerSecPerInstance is the measured bulk rate one instance gives
	// (0 = unknown: the job is not counted).
	ItemsPerSecPerInstance float64
	// ExpiryCost is the value lost if the job misses its window (USD).
	// 0 means missing is unacceptable: always worth an instance.
	ExpiryCost float64
}

// Triggers of a [Decision]. The first three change the count; the others
// say why it stayed (or was clamped).
const (
	TriggerUtilization   = "utilization"   // smoothed utilization outside the band
	TriggerLatency       = "latency"       // p99 or queue delay above the SLO
	TriggerBacklog       = "backlog"       // open jobs would miss their windows
	TriggerMin           = "min"           // held at or raised to MinInstances
	TriggerMax           = "max"           // held at or lowered to MaxInstances
	TriggerCooldown      = "cooldown"      // a change is wanted but a cooldown runs
	TriggerTolerance     = "tolerance"     // utilization inside the band
	TriggerStabilization = "stabilization" // a recent recommendation forbids the scale-down
	TriggerBacklogHold   = "backlog_hold"  // the backlog forbids the scale-down
	TriggerSteady        = "steady"        // the formula gives the current count
	TriggerNoData        = "no_data"       // no utilization measured yet
)

// Decision is the outcome of one [Controller.Observe]. Desired == Current
// means no change.
type Decision struct {
	Time    time.Time
	Desired int
	Current int
	// Trigger names the rule that decided (the Trigger* constants).
	Trigger string
	// Figures are the measurements and intermediate results the decision
	// was made on, by name: current, desired, min, max, utilization,
	// busy_instances, target, tolerance, utilization_recommendation,
	// stabilized_recommendation, p99_ms, queue_delay_ms, slo_ms,
	// since_last_change_s, cooldown_left_s, backlog_*.
	Figures map[string]float64
	// Reason says it in a sentence.
	Reason string
}

// Change reports whether the decision asks for a different count.
func (d Decision) Change() bool { return d.Desired != d.Current }

type recommendation struct {
	at time.Time
	n  int
}

// Controller decides the instance count of one model. It is pure logic:
// no goroutines, no clock of its own (time comes with each [Sample]). It is
// not safe for concurrent use; [Scaler] serialises it.
type Controller struct {
	cfg Config

	started   bool
	startedAt time.Time

	// Busy-time counter baseline and the smoothed demand.
	haveBase bool
	baseAt   time.Time
	baseBusy float64
	demand   float64 // EWMA of busy instance-equivalents (busy seconds per second)
	haveDem  bool

	haveChange bool
	lastChange time.Time
	haveUp     bool
	lastUp     time.Time
	observed   int // Instances of the last sample

	recs []recommendation // for the scale-down stabilization
}

// NewController validates cfg after filling its defaults.
func NewController(cfg Config) (*Controller, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg}, nil
}

// Config returns the configuration in use, defaults filled.
func (c *Controller) Config() Config { return c.cfg }

// Applied tells the controller that the count was changed to n at the
// given time; it starts the cooldowns. Call it only once the change has
// been made: a failed change must not start them.
func (c *Controller) Applied(n int, at time.Time) {
	if n > c.observed {
		c.haveUp, c.lastUp = true, at
	}
	c.haveChange, c.lastChange = true, at
	c.observed = n
}

// eps absorbs floating-point noise before a ceiling, so that 2.4/0.6 is 4
// and not 5.
const eps = 1e-9

func ceil(x float64) int { return int(math.Ceil(x - eps)) }

func (c *Controller) clamp(n int) int {
	return min(max(n, c.cfg.MinInstances), c.cfg.MaxInstances)
}

// updateDemand folds the busy time since the last sample into the EWMA.
// It returns the raw busy instance-equivalents of the interval, if any.
func (c *Controller) updateDemand(s Sample) (float64, bool) {
	if !c.haveBase || s.BusySeconds < c.baseBusy {
		c.haveBase, c.baseAt, c.baseBusy = true, s.Time, s.BusySeconds
		return 0, false
	}
	dt := s.Time.Sub(c.baseAt).Seconds()
	if dt <= 0 {
		return 0, false
	}
	raw := (s.BusySeconds - c.baseBusy) / dt
	c.baseAt, c.baseBusy = s.Time, s.BusySeconds
	if !c.haveDem {
		c.demand, c.haveDem = raw, true
		return raw, true
	}
	alpha := 1 - math.Exp(-dt/c.cfg.Window.Seconds())
	c.demand += alpha * (raw - c.demand)
	return raw, true
}

// Observe takes one sample and decides the desired instance count.
//
// # Rules
//
// The utilization signal is the busy time diffed into busy
// instance-equivalents (busy seconds per second) and smoothed by an EWMA
// with time constant Window. Smoothing the demand rather than the
// per-instance utilization means a change of the count is reflected at
// once (utilization = demand / instances), so the smoothing lag cannot
// make the controller overshoot after its own scale-up.
//
//   - Bounds: a count below MinInstances or above MaxInstances is corrected
//     at once, whatever the cooldowns.
//   - Utilization: recommendation = ceil(demand / target), which is the HPA
//     formula ceil(current * utilization / target), clamped to the bounds;
//     none while |utilization/target - 1| <= Tolerance.
//   - Latency: p99 or queue delay above SLO scales up to max(current+1,
//     ceil(demand/target)) at once, bypassing ScaleUpCooldown, but at most
//     once per LatencyCooldown after a scale-up, and never beyond max.
//   - Backlog: the open jobs, in deadline order (earliest deadline first),
//     need ceil(work due by deadline k / time to deadline k) instances,
//     where work is items / measured rate. When that exceeds the current
//     count (a job would miss) and the extra instances cost less until the
//     deadline than the job's ExpiryCost (or ExpiryCost is 0), scale up to
//     it. Jobs past their deadline or of unknown rate are not counted.
//   - Scale-ups by utilization or backlog wait ScaleUpCooldown after any
//     change. The largest admissible candidate wins.
//   - Scale-down waits ScaleDownCooldown after the last change (or the
//     first sample) and goes only to the highest recommendation of the last
//     ScaleDownStabilization (as the Kubernetes HPA), never below the
//     backlog's need.
func (c *Controller) Observe(s Sample) Decision {
	cfg := c.cfg
	now := s.Time
	if !c.started {
		c.started, c.startedAt = true, now
	}
	cur := s.Instances
	c.observed = cur
	raw, haveRaw := c.updateDemand(s)

	d := Decision{Time: now, Current: cur, Desired: cur, Figures: map[string]float64{
		"current":   float64(cur),
		"min":       float64(cfg.MinInstances),
		"max":       float64(cfg.MaxInstances),
		"target":    cfg.TargetUtilization,
		"tolerance": cfg.Tolerance,
	}}
	f := d.Figures
	if haveRaw {
		f["busy_instances_raw"] = raw
	}
	if c.haveChange {
		f["since_last_change_s"] = now.Sub(c.lastChange).Seconds()
	}

	// Utilization.
	haveUtil := c.haveDem && cur > 0
	var util float64
	utilRec, banded, inBand := cur, cur, false
	if c.haveDem {
		utilRec = ceil(c.demand / cfg.TargetUtilization)
		f["busy_instances"] = c.demand
		f["utilization_recommendation"] = float64(c.clamp(utilRec))
	}
	if haveUtil {
		util = c.demand / float64(cur)
		f["utilization"] = util
		inBand = math.Abs(util/cfg.TargetUtilization-1) <= cfg.Tolerance+eps
		if !inBand {
			banded = c.clamp(utilRec)
		}
	}

	// Latency.
	breach := false
	if cfg.SLO > 0 {
		f["slo_ms"] = ms(cfg.SLO)
		f["p99_ms"] = ms(s.P99)
		f["queue_delay_ms"] = ms(s.QueueDelay)
		breach = s.P99 > cfg.SLO || s.QueueDelay > cfg.SLO
	}
	latRec := 0
	if breach {
		latRec = c.clamp(max(cur+1, utilRec))
	}

	// Backlog.
	bl := c.backlog(now, cur, s.Backlog, f)

	// Remember the recommendation for the stabilization window.
	// Without a utilization only the latency and backlog rules recommend.
	switch {
	case haveUtil:
		c.remember(now, c.clamp(max(banded, latRec, bl)))
	case breach || bl > 0:
		c.remember(now, c.clamp(max(latRec, bl)))
	default:
		c.remember(now, 0) // only prunes
	}
	stab := c.stabilized()
	f["stabilized_recommendation"] = float64(stab)

	decide := func(n int, trigger, reason string, args ...any) Decision {
		d.Desired, d.Trigger, d.Reason = n, trigger, fmt.Sprintf(reason, args...)
		f["desired"] = float64(n)
		return d
	}

	// Bounds first.
	if cur < cfg.MinInstances {
		return decide(cfg.MinInstances, TriggerMin, "%d instances is below the minimum: %d -> %d.", cur, cur, cfg.MinInstances)
	}
	if cur > cfg.MaxInstances {
		return decide(cfg.MaxInstances, TriggerMax, "%d instances is above the maximum: %d -> %d.", cur, cur, cfg.MaxInstances)
	}

	// Scale-up candidates, in order of preference on a tie.
	type candidate struct {
		trigger string
		n       int
		wait    time.Duration // cooldown left; 0 = admissible
		why     string
	}
	upWait := c.wait(c.haveChange, c.lastChange, cfg.ScaleUpCooldown, now)
	var cands []candidate
	wanted := false // some rule wants more than the current count
	if breach {
		wanted = true
		cands = append(cands, candidate{TriggerLatency, latRec, c.wait(c.haveUp, c.lastUp, cfg.LatencyCooldown, now),
			fmt.Sprintf("p99 %.0fms / queue delay %.0fms above the %.0fms SLO", ms(s.P99), ms(s.QueueDelay), ms(cfg.SLO))})
	}
	if bl > cur {
		wanted = true
		cands = append(cands, candidate{TriggerBacklog, bl, upWait,
			fmt.Sprintf("%.0f open jobs would miss their windows at %d instances", f["backlog_missing_jobs"], cur)})
	}
	if haveUtil && !inBand && utilRec > cur {
		wanted = true
		cands = append(cands, candidate{TriggerUtilization, banded, upWait,
			fmt.Sprintf("utilization %.2f is above the %.2f target beyond the %.0f%% tolerance", util, cfg.TargetUtilization, cfg.Tolerance*100)})
	}
	var best *candidate
	var blocked *candidate
	for i := range cands {
		k := &cands[i]
		if k.n <= cur {
			continue
		}
		if k.wait > 0 {
			if blocked == nil || k.wait < blocked.wait {
				blocked = k
			}
			continue
		}
		if best == nil || k.n > best.n {
			best = k
		}
	}
	if best != nil {
		return decide(best.n, best.trigger, "Scale up %d -> %d: %s.", cur, best.n, best.why)
	}
	if blocked != nil {
		f["cooldown_left_s"] = blocked.wait.Seconds()
		return decide(cur, TriggerCooldown, "Hold at %d: %s, but the %s cooldown has %s left.", cur, blocked.why, blocked.trigger, blocked.wait.Round(time.Second))
	}
	if wanted { // every candidate is clamped to the current count
		return decide(cur, TriggerMax, "Hold at the maximum of %d instances although more are wanted.", cur)
	}

	// Scale-down.
	if haveUtil && !inBand && banded < cur {
		downRef := c.startedAt
		if c.haveChange {
			downRef = c.lastChange
		}
		if w := cfg.ScaleDownCooldown - now.Sub(downRef); w > 0 {
			f["cooldown_left_s"] = w.Seconds()
			return decide(cur, TriggerCooldown, "Hold at %d: utilization %.2f is below the %.2f target, but the scale-down cooldown has %s left.",
				cur, util, cfg.TargetUtilization, w.Round(time.Second))
		}
		if stab >= cur {
			return decide(cur, TriggerStabilization, "Hold at %d: utilization %.2f is below the %.2f target, but %d instances were recommended within the last %s.",
				cur, util, cfg.TargetUtilization, stab, cfg.ScaleDownStabilization)
		}
		n := max(stab, bl)
		if n >= cur {
			return decide(cur, TriggerBacklogHold, "Hold at %d: utilization %.2f is below the %.2f target, but the open jobs need %d instances to meet their windows.",
				cur, util, cfg.TargetUtilization, bl)
		}
		return decide(n, TriggerUtilization, "Scale down %d -> %d: utilization %.2f is below the %.2f target beyond the %.0f%% tolerance (highest recommendation over the last %s: %d).",
			cur, n, util, cfg.TargetUtilization, cfg.Tolerance*100, cfg.ScaleDownStabilization, stab)
	}

	switch {
	case !haveUtil:
		return decide(cur, TriggerNoData, "Hold at %d: no utilization measured yet.", cur)
	case inBand:
		return decide(cur, TriggerTolerance, "Hold at %d: utilization %.2f is within %.0f%% of the %.2f target.", cur, util, cfg.Tolerance*100, cfg.TargetUtilization)
	case util < cfg.TargetUtilization && cur == cfg.MinInstances:
		return decide(cur, TriggerMin, "Hold at the minimum of %d instances: utilization %.2f is below the %.2f target.", cur, util, cfg.TargetUtilization)
	default:
		return decide(cur, TriggerSteady, "Hold at %d: utilization %.2f needs %d instances at the %.2f target.", cur, util, utilRec, cfg.TargetUtilization)
	}
}

// wait is how long a cooldown of length cd started at since (if any) still
// runs at now.
func (c *Controller) wait(have bool, since time.Time, cd time.Duration, now time.Time) time.Duration {
	if !have {
		return 0
	}
	return max(cd-now.Sub(since), 0)
}

func (c *Controller) remember(now time.Time, n int) {
	cut := now.Add(-c.cfg.ScaleDownStabilization)
	i := 0
	for i < len(c.recs) && !c.recs[i].at.After(cut) {
		i++
	}
	c.recs = c.recs[i:]
	if n > 0 {
		c.recs = append(c.recs, recommendation{at: now, n: n})
	}
}

func (c *Controller) stabilized() int {
	n := 0
	for _, r := range c.recs {
		n = max(n, r.n)
	}
	return n
}

// backlog returns the instance count the open jobs need to meet their
// windows, counting only the jobs worth it; 0 when none. It is both a
// scale-up target (when above the current count) and a floor for
// scale-down (jobs on track are kept on track). It adds its figures to f.
//
// Jobs are taken earliest deadline first: job k meets its window when the
// work of jobs 1..k (items / rate, in instance-seconds) fits into
// instances x time to deadline k. A job whose need exceeds the current
// count would miss; it is worth the extra instances when ExpiryCost is 0
// or when (need - current) x price x hours to deadline < ExpiryCost and
// need <= MaxInstances (a job that misses even at the maximum is not worth
// paying for, unless missing is unacceptable, ExpiryCost 0, in which case
// the maximum is asked for to shorten the miss).
func (c *Controller) backlog(now time.Time, cur int, jobs []Backlog, f map[string]float64) int {
	if len(jobs) == 0 {
		return 0
	}
	open := make([]Backlog, 0, len(jobs))
	items, late, unknown := 0, 0, 0
	for _, j := range jobs {
		if j.ItemsLeft <= 0 {
			continue
		}
		items += j.ItemsLeft
		switch {
		case !j.Deadline.After(now):
			late++
		case j.ItemsPerSecPerInstance <= 0:
			unknown++
		default:
			open = append(open, j)
		}
	}
	slices.SortStableFunc(open, func(a, b Backlog) int { return a.Deadline.Compare(b.Deadline) })
	need, missing, unworthy := 0, 0, 0
	var work, extraCost, expiry float64
	for _, j := range open {
		work += float64(j.ItemsLeft) / j.ItemsPerSecPerInstance
		left := j.Deadline.Sub(now)
		n := ceil(work / left.Seconds())
		if n <= cur {
			need = max(need, n)
			continue
		}
		missing++
		cost := float64(n-cur) * c.cfg.InstancePricePerHour * left.Hours()
		worth := j.ExpiryCost == 0 || (n <= c.cfg.MaxInstances && cost < j.ExpiryCost)
		if !worth {
			unworthy++
			continue
		}
		if n = min(n, c.cfg.MaxInstances); n > need {
			need, extraCost, expiry = n, float64(n-cur)*c.cfg.InstancePricePerHour*left.Hours(), j.ExpiryCost
		}
	}
	f["backlog_jobs"] = float64(len(jobs))
	f["backlog_items"] = float64(items)
	f["backlog_needed_instances"] = float64(need)
	f["backlog_missing_jobs"] = float64(missing)
	f["backlog_not_worth_jobs"] = float64(unworthy)
	f["backlog_late_jobs"] = float64(late)
	f["backlog_unknown_rate_jobs"] = float64(unknown)
	if need > cur {
		f["backlog_extra_cost_usd"] = extraCost
		f["backlog_expiry_cost_usd"] = expiry
	}
	return need
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
