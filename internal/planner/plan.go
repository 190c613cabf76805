package planner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultMaxInstances is the most instances MakePlan tries per setting
// unless the request says otherwise.
const DefaultMaxInstances = 8

// costTie is the relative cost difference below which two candidates
// count as equally expensive. Loaded costs of settings on the same
// instances differ only by the simulated tail of the last requests (the
// span ends at the last completion), which is noise, not a saving.
const costTie = 1e-3

// Request asks for a plan.
type Request struct {
	Profile  *Profile
	Workload Workload
	// SLO is the p99 latency objective.
	SLO time.Duration
	// CostSensitivity is "low", "medium" (the default) or "high".
	CostSensitivity string
	// PricePerInstanceHour is the USD price of one instance for an hour.
	PricePerInstanceHour float64
	// MaxInstances bounds the instances tried per setting; 0 means 8.
	MaxInstances int
}

// Recommendation is the setting MakePlan recommends.
type Recommendation struct {
	Mode     string
	Settings Settings
	// P99MS is the simulated p99 latency in milliseconds; CostPer1k the
	// loaded cost of 1,000 requests in USD.
	P99MS, CostPer1k float64
	// Reasons are plain sentences with the numbers that decided.
	Reasons []string
	// RunnerUp is the next best candidate (of another mode when one meets
	// the SLO), or nil.
	RunnerUp *Result
	// Result is the recommended candidate's full simulation result.
	Result Result
}

// Plan is MakePlan's answer.
type Plan struct {
	// Candidates are the simulated settings, realtime first, then hybrid,
	// then batch, each at the instance count MakePlan settled on.
	Candidates []Result
	// Recommendation is the chosen candidate. When no candidate meets the
	// SLO it is the one with the best SLO attainment, and its first
	// reason says that the SLO cannot be met.
	Recommendation *Recommendation
}

// tolerance is the share by which a candidate's loaded cost may exceed the
// cheapest SLO-meeting one and still win on p99, per cost sensitivity.
var tolerance = map[string]float64{"high": 0, "medium": 0.10, "low": 0.50}

// MakePlan simulates the request's workload under a grid of settings and
// recommends one.
//
// The candidates, each simulated at the smallest instance count from 1 to
// MaxInstances that meets the SLO (or MaxInstances when none does):
//
//   - realtime: policy single, and policy hybrid with max batch 8 and a
//     1 ms max queue delay;
//   - hybrid: policy hybrid with max batch 16, 32 and 64 (capped at the
//     profile's largest size) and max queue delay 2, 5, 10 and 20 ms;
//     policy time every 5 ms and policy size, both at max batch 32;
//   - batch: completion windows of 1h, 6h and 24h that do not exceed the
//     SLO, on one instance.
//
// Among the candidates that meet the SLO, the cost sensitivity sets how
// much more than the cheapest loaded cost per 1k requests a candidate may
// cost (high 0%, medium 10%, low 50%); within that, the lowest p99 wins.
// Every candidate is simulated with the workload's seed, so that they see
// the same arrivals and comparable service-time draws.
func MakePlan(ctx context.Context, req Request) (*Plan, error) {
	if err := req.Profile.Validate(); err != nil {
		return nil, err
	}
	if req.SLO <= 0 {
		return nil, errors.New("plan needs an SLO > 0")
	}
	if !(req.PricePerInstanceHour >= 0) || math.IsInf(req.PricePerInstanceHour, 0) {
		return nil, fmt.Errorf("price per instance-hour %v: want a number >= 0", req.PricePerInstanceHour)
	}
	sens := req.CostSensitivity
	if sens == "" {
		sens = "medium"
	}
	tol, ok := tolerance[sens]
	if !ok {
		return nil, fmt.Errorf("cost sensitivity %q: want low, medium or high", req.CostSensitivity)
	}
	maxInst := req.MaxInstances
	if maxInst <= 0 {
		maxInst = DefaultMaxInstances
	}
	arrivals, err := req.Workload.Arrivals()
	if err != nil {
		return nil, err
	}

	grid := candidateSettings(req.Profile, req.SLO)
	cands := make([]Result, len(grid))
	errs := make([]error, len(grid))
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(grid)) {
		wg.Go(func() {
			for {
				next.Lock()
				k := i
				i++
				next.Unlock()
				if k >= len(grid) {
					return
				}
				cands[k], errs[k] = searchInstances(ctx, req, arrivals, grid[k], maxInst)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	plan := &Plan{Candidates: cands}
	plan.Recommendation = recommend(req, sens, tol, maxInst, cands)
	return plan, nil
}

// searchInstances simulates s with 1, 2, ... instances and returns the
// first result that meets the SLO, or the last. Batch settings run on the
// instances they name.
func searchInstances(ctx context.Context, req Request, arrivals []time.Duration, s Settings, maxInst int) (Result, error) {
	if s.Mode == ModeBatch {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		return Simulate(req.Profile, arrivals, s, req.SLO, req.PricePerInstanceHour, req.Workload.Seed), nil
	}
	var r Result
	for k := 1; k <= maxInst; k++ {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		prev := r
		s.Instances = k
		r = Simulate(req.Profile, arrivals, s, req.SLO, req.PricePerInstanceHour, req.Workload.Seed)
		if r.MeetsSLO {
			break
		}
		if k > 1 && !r.Overloaded && !prev.Overloaded && float64(r.P99) >= 0.99*float64(prev.P99) {
			// Keeping up, and another instance did not shorten the
			// tail: more will not meet the SLO either.
			break
		}
	}
	return r, nil
}

// candidateSettings is MakePlan's grid (instances are searched later).
func candidateSettings(p *Profile, slo time.Duration) []Settings {
	largest := p.MaxBatchSize()
	capped := func(n int) int { return max(min(n, largest), 1) }
	out := []Settings{
		{Mode: ModeRealtime, Policy: PolicySingle, MaxBatchSize: 1},
		{Mode: ModeRealtime, Policy: PolicyHybrid, MaxBatchSize: capped(8), MaxQueueDelay: time.Millisecond},
	}
	var sizes []int
	for _, n := range []int{16, 32, 64} {
		if c := capped(n); len(sizes) == 0 || sizes[len(sizes)-1] != c {
			sizes = append(sizes, c)
		}
	}
	for _, n := range sizes {
		for _, d := range []time.Duration{2, 5, 10, 20} {
			out = append(out, Settings{Mode: ModeHybrid, Policy: PolicyHybrid, MaxBatchSize: n, MaxQueueDelay: d * time.Millisecond})
		}
	}
	out = append(out,
		Settings{Mode: ModeHybrid, Policy: PolicyTime, MaxBatchSize: capped(32), BatchTimeout: 5 * time.Millisecond},
		Settings{Mode: ModeHybrid, Policy: PolicySize, MaxBatchSize: capped(32)},
	)
	for _, w := range []time.Duration{time.Hour, 6 * time.Hour, 24 * time.Hour} {
		if w <= slo {
			out = append(out, Settings{Mode: ModeBatch, MaxBatchSize: largest, Instances: 1, Window: w})
		}
	}
	return out
}

// best returns the index in cands of the winner by the recommendation
// rule, among those keep accepts; -1 if none. The cheapest loaded cost
// sets the bar; candidates within tol of it (and ties) compete on p99,
// then on cost, then on order.
func best(cands []Result, tol float64, keep func(i int) bool) int {
	cheapest := math.Inf(1)
	for i, c := range cands {
		if keep(i) {
			cheapest = min(cheapest, c.CostPer1k)
		}
	}
	bar := cheapest * (1 + tol + costTie)
	win := -1
	for i, c := range cands {
		if !keep(i) || c.CostPer1k > bar {
			continue
		}
		if win < 0 || c.P99 < cands[win].P99 || (c.P99 == cands[win].P99 && c.CostPer1k < cands[win].CostPer1k) {
			win = i
		}
	}
	return win
}

func recommend(req Request, sens string, tol float64, maxInst int, cands []Result) *Recommendation {
	if len(cands) == 0 {
		return nil
	}
	meets := func(i int) bool { return cands[i].MeetsSLO }
	win := best(cands, tol, meets)
	met := win >= 0
	if !met {
		// Nothing meets the SLO: the best attainment, then the lowest p99.
		win = 0
		for i, c := range cands {
			w := cands[win]
			if c.SLOAttainment > w.SLOAttainment || (c.SLOAttainment == w.SLOAttainment && c.P99 < w.P99) {
				win = i
			}
		}
	}
	r := cands[win]
	mode := r.Settings.Mode
	ru := best(cands, tol, func(i int) bool { return meets(i) && cands[i].Settings.Mode != mode })
	if ru < 0 {
		ru = best(cands, tol, func(i int) bool { return meets(i) && i != win })
	}
	if ru < 0 && !met {
		ru = best(cands, math.Inf(1), func(i int) bool { return i != win && cands[i].Settings.Mode != mode })
	}
	rec := &Recommendation{
		Mode:      mode,
		Settings:  r.Settings,
		P99MS:     float64(r.P99) / float64(time.Millisecond),
		CostPer1k: r.CostPer1k,
		Result:    r,
	}
	if ru >= 0 {
		ruCopy := cands[ru]
		rec.RunnerUp = &ruCopy
	}
	rec.Reasons = reasons(req, sens, tol, maxInst, cands, r, met, rec.RunnerUp)
	return rec
}

// reasons explains the recommendation r in 3 to 5 sentences.
func reasons(req Request, sens string, tol float64, maxInst int, cands []Result, r Result, met bool, ru *Result) []string {
	slo := fmtDur(req.SLO)
	var out []string
	if met {
		out = append(out, fmt.Sprintf("Recommended: %s. Its simulated p99 is %s against the %s SLO, with %s of requests within it.",
			r.Settings, fmtDur(r.P99), slo, fmtPct(r.SLOAttainment)))
	} else {
		out = append(out, fmt.Sprintf("No simulated setting meets the %s p99 SLO with up to %s: the closest, %s, keeps %s of requests within it at a p99 of %s.",
			slo, plural(maxInst, "instance"), r.Settings, fmtPct(r.SLOAttainment), fmtDur(r.P99)))
	}
	if s := economics(cands, r, maxInst, slo); s != "" {
		out = append(out, s)
	}
	out = append(out, batchingGain(req.Profile))
	if met {
		if tol == 0 {
			out = append(out, "Cost sensitivity high: the cheapest SLO-meeting candidate wins.")
		} else {
			cheapest := cands[best(cands, 0, func(i int) bool { return cands[i].MeetsSLO })]
			out = append(out, fmt.Sprintf("Cost sensitivity %s: among SLO-meeting candidates within %.0f%% of the cheapest loaded cost (%s per 1k requests), the lowest p99 wins.",
				sens, tol*100, fmtUSD(cheapest.CostPer1k)))
		}
	}
	if ru != nil {
		out = append(out, fmt.Sprintf("The runner-up, %s, costs %s per 1k requests (%s) with a p99 of %s, %s.",
			ru.Settings, fmtUSD(ru.CostPer1k), relCost(ru.CostPer1k, r.CostPer1k), fmtDur(ru.P99), relLatency(ru.P99, r.P99)))
	}
	return out
}

// economics compares r with the cheapest SLO-meeting candidate of the
// competing modes.
func economics(cands []Result, r Result, maxInst int, slo string) string {
	// The cheapest SLO-meeting candidate of some modes; among ties, the
	// lowest p99.
	cheapestOf := func(keep func(m string) bool) *Result {
		i := best(cands, 0, func(i int) bool { return cands[i].MeetsSLO && keep(cands[i].Settings.Mode) })
		if i < 0 {
			return nil
		}
		return &cands[i]
	}
	rate := fmtNum(r.OfferedRPS)
	switch r.Settings.Mode {
	case ModeRealtime:
		h := cheapestOf(func(m string) bool { return m == ModeHybrid })
		if h == nil {
			return fmt.Sprintf("No hybrid setting meets the %s SLO with up to %s, so batching is not an option.", slo, plural(maxInst, "instance"))
		}
		who := "a single instance is"
		if r.Settings.Instances > 1 {
			who = fmt.Sprintf("its %d instances are", r.Settings.Instances)
		}
		if !cheaper(h.CostPer1k, r.CostPer1k) {
			like := "like"
			if cheaper(r.CostPer1k, h.CostPer1k) {
				like = "more than"
			}
			return fmt.Sprintf("At %s req/s %s %s utilized, so batching cannot lower the cost: the cheapest SLO-meeting hybrid setting (%s) costs %s per 1k requests, %s realtime's %s.",
				rate, who, fmtPct(r.Utilization), h.Settings, fmtUSD(h.CostPer1k), like, fmtUSD(r.CostPer1k))
		}
		return fmt.Sprintf("At %s req/s %s %s utilized; batching (%s) would cost %s per 1k requests, %s, but at a p99 of %s.",
			rate, who, fmtPct(r.Utilization), h.Settings, fmtUSD(h.CostPer1k), relCost(h.CostPer1k, r.CostPer1k), fmtDur(h.P99))
	case ModeHybrid:
		rt := cheapestOf(func(m string) bool { return m == ModeRealtime })
		carry := fmt.Sprintf("batching at an average of %.1f requests per batch carries %s req/s on %s at %s utilization",
			r.AvgBatch, rate, plural(r.Settings.Instances, "instance"), fmtPct(r.Utilization))
		if rt == nil {
			return fmt.Sprintf("No realtime setting meets the %s SLO with up to %s; %s.", slo, plural(maxInst, "instance"), carry)
		}
		return fmt.Sprintf("Here %s, for %s per 1k requests against %s for realtime (%s, %s utilized), %s.",
			carry, fmtUSD(r.CostPer1k), fmtUSD(rt.CostPer1k), rt.Settings, fmtPct(rt.Utilization), relCost(r.CostPer1k, rt.CostPer1k))
	case ModeBatch:
		o := cheapestOf(func(m string) bool { return m != ModeBatch })
		if o == nil {
			return fmt.Sprintf("No always-on setting meets the %s SLO with up to %s; batch mode runs each %s window as one job and pays only for its busy time, %s per 1k requests.",
				slo, plural(maxInst, "instance"), fmtDur(r.Settings.Window), fmtUSD(r.CostPer1k))
		}
		return fmt.Sprintf("Batch mode pays only for the busy time of each %s job at batch %d: %s per 1k requests against %s for the cheapest always-on setting (%s, %s utilized), %s.",
			fmtDur(r.Settings.Window), r.Settings.MaxBatchSize, fmtUSD(r.CostPer1k), fmtUSD(o.CostPer1k), o.Settings, fmtPct(o.Utilization), relCost(r.CostPer1k, o.CostPer1k))
	}
	return ""
}

// batchingGain states the profile's measured gain of its largest batch
// over batch 1.
func batchingGain(p *Profile) string {
	n := p.MaxBatchSize()
	if n <= 1 {
		return "The profile measures no batch size above 1, so batching has no measured gain."
	}
	one, big := p.itemsPerSec(1), p.itemsPerSec(n)
	per := "per instance"
	if k := p.instances(); k > 1 {
		per = fmt.Sprintf("per %d instances", k)
	}
	measured := "a measured"
	if p.Points[0].BatchSize != 1 {
		measured = "an interpolated"
	}
	return fmt.Sprintf("Batching at %d runs %s items/s %s against %s at batch 1, %s %.1fx gain.",
		n, fmtNum(big), per, fmtNum(one), measured, big/one)
}

// cheaper reports whether cost a is lower than b beyond a tie.
func cheaper(a, b float64) bool { return a < b*(1-costTie) }

// relCost says how cost a compares with b.
func relCost(a, b float64) string {
	switch {
	case b == 0 && a == 0, !cheaper(a, b) && !cheaper(b, a):
		return "the same"
	case b == 0:
		return "more"
	case a > b:
		if a >= 2*b {
			return fmt.Sprintf("%.1fx as much", a/b)
		}
		return fmtPct(a/b-1) + " more"
	}
	return fmtPct(1-a/b) + " less"
}

// relLatency says how latency a compares with b.
func relLatency(a, b time.Duration) string {
	switch {
	case a == b:
		return "the same latency"
	case a > b:
		return fmtDur(a-b) + " slower"
	}
	return fmtDur(b-a) + " faster"
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// sig3 formats v with 3 significant digits and no exponent.
func sig3(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 3, 64), 64)
	return strconv.FormatFloat(r, 'f', -1, 64)
}

// fmtDur formats a duration in the unit that suits it.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + " ms"
	case d < time.Minute:
		return sig3(d.Seconds()) + " s"
	case d < time.Hour:
		return sig3(d.Minutes()) + " min"
	}
	return sig3(d.Hours()) + "h"
}

func fmtUSD(v float64) string { return "$" + sig3(v) }

func fmtPct(share float64) string {
	pct := share * 100
	switch {
	case pct >= 99.95 && pct < 100:
		return "99.9%"
	case pct >= 10:
		return strconv.FormatFloat(pct, 'f', 0, 64) + "%"
	case pct >= 1:
		return strconv.FormatFloat(pct, 'f', 1, 64) + "%"
	}
	return sig3(pct) + "%"
}

// fmtNum formats a rate: 3 significant digits, with thousands separators
// from 1,000.
func fmtNum(v float64) string {
	if v < 1000 {
		return sig3(v)
	}
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
