package dashboard

import (
	"math"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
)

// The metric families the dashboard reads (see internal/metrics).
const (
	mRequests    = "infergate_requests_total"
	mLatency     = "infergate_request_latency_seconds"
	mQueueTime   = "infergate_request_queue_seconds"
	mComputeTime = "infergate_request_compute_seconds"
	mBatchSize   = "infergate_batch_size"
	mInferences  = "infergate_inference_count_total"
	mExecutions  = "infergate_execution_count_total"
	mFailures    = "infergate_batch_failures_total"
	mQueueLen    = "infergate_queue_length"
	mInstances   = "infergate_instances"
	mUtilization = "infergate_instance_utilization"
	mBusy        = "infergate_instance_busy_seconds_total"
	mCost        = "infergate_cost_usd_total"
	mBatchLat    = "infergate_batch_latency_seconds"
)

// families maps each family read to the labels (after "model") that key its
// series.
var families = map[string][2]string{
	mRequests:    {"class", "outcome"},
	mLatency:     {"class"},
	mQueueTime:   {"class"},
	mComputeTime: {"class"},
	mBatchSize:   {},
	mInferences:  {},
	mExecutions:  {},
	mFailures:    {},
	mQueueLen:    {"class"},
	mInstances:   {},
	mUtilization: {},
	mBusy:        {},
	mCost:        {"class", "mode"},
	mBatchLat:    {"batch_size"},
}

// key names one series: a family, its model and up to two more labels.
type key struct{ name, model, a, b string }

// hist is one cumulative histogram. The +Inf bucket is count.
type hist struct {
	bounds []float64 // finite upper bounds, ascending
	cum    []float64 // cumulative count at each bound
	count  float64
	sum    float64
}

// snapshot is one gathering of the registry, reduced to the series the
// dashboard reads.
type snapshot struct {
	vals   map[key]float64
	hists  map[key]hist
	models []string // sorted
}

// gather reads g into a snapshot. A Gatherer may return an error together
// with the families it could gather; what came back is used.
//
// NOTE: the client_model types are used only through their getters and type
// inference, so that this package does not import client_model directly.
func gather(g prometheus.Gatherer) (*snapshot, error) {
	mfs, err := g.Gather()
	s := &snapshot{vals: map[key]float64{}, hists: map[key]hist{}}
	seen := map[string]bool{}
	for _, mf := range mfs {
		want, ok := families[mf.GetName()]
		if !ok {
			continue
		}
		for _, m := range mf.GetMetric() {
			k := key{name: mf.GetName()}
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "model":
					k.model = lp.GetValue()
				case want[0]:
					k.a = lp.GetValue()
				case want[1]:
					k.b = lp.GetValue()
				}
			}
			if k.model == "" {
				continue
			}
			if !seen[k.model] {
				seen[k.model] = true
				s.models = append(s.models, k.model)
			}
			switch {
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				var x hist
				for _, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), +1) {
						continue
					}
					x.bounds = append(x.bounds, b.GetUpperBound())
					x.cum = append(x.cum, float64(b.GetCumulativeCount()))
				}
				x.count, x.sum = float64(h.GetSampleCount()), h.GetSampleSum()
				s.hists[k] = x
			case m.GetCounter() != nil:
				s.vals[k] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				s.vals[k] = m.GetGauge().GetValue()
			case m.GetUntyped() != nil:
				s.vals[k] = m.GetUntyped().GetValue()
			}
		}
	}
	slices.Sort(s.models)
	return s, err
}

// counterDelta returns how much a counter grew from prev to cur. A series
// missing from prev started at 0 (vectors create series on first use); a
// decrease is a reset, so the growth is the current value. ok is false when
// cur lacks the series.
func counterDelta(prev, cur *snapshot, k key) (d float64, ok bool) {
	c, ok := cur.vals[k]
	if !ok {
		return 0, false
	}
	p := prev.vals[k]
	if c < p {
		return c, true
	}
	return c - p, true
}

// histDelta returns the bucket counts of the observations made between
// prev and cur, with the same reset rules as counterDelta.
func histDelta(prev, cur *snapshot, k key) (h hist, ok bool) {
	c, ok := cur.hists[k]
	if !ok {
		return hist{}, false
	}
	p, had := prev.hists[k]
	if !had || p.count > c.count || !slices.Equal(p.bounds, c.bounds) {
		return c, true
	}
	h = hist{bounds: c.bounds, cum: make([]float64, len(c.cum)), count: c.count - p.count, sum: c.sum - p.sum}
	for i := range c.cum {
		h.cum[i] = max(0, c.cum[i]-p.cum[i])
	}
	return h, true
}

// quantile estimates the q-quantile of h by linear interpolation within
// the bucket holding the rank, as Prometheus's histogram_quantile does: the
// first bucket starts at 0, and a rank in the +Inf bucket reports the
// highest finite bound. It is NaN when h holds no observations.
func quantile(q float64, h hist) float64 {
	if h.count <= 0 || math.IsNaN(q) {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	rank := q * h.count
	prevCum, lower := 0.0, 0.0
	for i, ub := range h.bounds {
		c := max(h.cum[i], prevCum) // guard against non-monotonic input
		if c >= rank && c > prevCum {
			if i == 0 && ub <= 0 {
				return ub
			}
			return lower + (ub-lower)*(rank-prevCum)/(c-prevCum)
		}
		prevCum, lower = c, ub
	}
	if len(h.bounds) == 0 {
		return math.NaN()
	}
	return h.bounds[len(h.bounds)-1]
}

// classes and modes are the label values the dashboard reports on.
var (
	classes = func() []string {
		out := make([]string, 0, len(infergate.Classes))
		for _, c := range infergate.Classes {
			out = append(out, c.String())
		}
		return out
	}()
	modes = []string{string(infergate.ModeRealtime), string(infergate.ModeHybrid), string(infergate.ModeBatch)}
)

// okOutcome is the outcome label of a served request; every other outcome
// (rejected, shed, expired, canceled, error) counts as a failure.
const okOutcome = "ok"

// savingAcc accumulates a model's running saving since the dashboard
// started: actual and one-by-one ("alone") cost, in seconds of instance time.
type savingAcc struct{ actual, alone float64 }

// compute derives a model's figures for the interval between prev and cur
// (dt seconds). prev is nil for the first sample: only the gauges are
// reported then. acc is updated with the interval's cost.
func compute(prev, cur *snapshot, model string, dt, pricePerHour float64, acc *savingAcc) *ModelPoint {
	nan := Num(math.NaN())
	p := &ModelPoint{
		OKRate: map[string]Num{}, FailRate: map[string]Num{}, P50: map[string]Num{}, P99: map[string]Num{},
		Queue: map[string]Num{}, CostPer1k: map[string]Num{},
		Batch: nan, Instances: nan, Utilization: nan, Saving: nan,
	}
	for _, c := range classes {
		if v, ok := cur.vals[key{mQueueLen, model, c, ""}]; ok {
			p.Queue[c] = Num(v)
		}
	}
	inst, hasInst := cur.vals[key{name: mInstances, model: model}]
	if hasInst {
		p.Instances = Num(inst)
	}
	if u, ok := cur.vals[key{name: mUtilization, model: model}]; ok {
		p.Utilization = Num(u) // since start; replaced by the interval figure below
	}
	if prev == nil {
		return p
	}

	// Throughput by class.
	ok := map[string]float64{}
	for k := range cur.vals {
		if k.name != mRequests || k.model != model {
			continue
		}
		d, _ := counterDelta(prev, cur, k)
		if k.b == okOutcome {
			ok[k.a] += d
		} else if dt > 0 {
			p.FailRate[k.a] += Num(d / dt)
		}
	}
	for _, c := range classes {
		if dt <= 0 {
			p.OKRate[c], p.FailRate[c] = nan, nan
			continue
		}
		p.OKRate[c] = Num(ok[c] / dt)
		p.FailRate[c] += 0 // present, 0 when no failures
	}

	// Latency quantiles by class.
	for _, c := range classes {
		if h, has := histDelta(prev, cur, key{mLatency, model, c, ""}); has {
			p.P50[c], p.P99[c] = ms(quantile(.5, h)), ms(quantile(.99, h))
			continue
		}
		qh, hasQ := histDelta(prev, cur, key{mQueueTime, model, c, ""})
		ch, hasC := histDelta(prev, cur, key{mComputeTime, model, c, ""})
		if !hasQ || !hasC {
			p.P50[c], p.P99[c] = nan, nan
			continue
		}
		if p.LatencyApprox == nil {
			p.LatencyApprox = map[string]bool{}
		}
		p.LatencyApprox[c] = true
		p.P50[c] = ms(quantile(.5, qh) + quantile(.5, ch))
		p.P99[c] = ms(quantile(.99, qh) + quantile(.99, ch))
	}

	// Mean batch size: items per successful batch.
	inf, hasInf := counterDelta(prev, cur, key{name: mInferences, model: model})
	exe, hasExe := counterDelta(prev, cur, key{name: mExecutions, model: model})
	fail, _ := counterDelta(prev, cur, key{name: mFailures, model: model})
	if hasInf && hasExe {
		if n := exe - fail; n > 0 {
			p.Batch = Num(inf / n)
		}
	} else if h, has := histDelta(prev, cur, key{name: mBatchSize, model: model}); has && h.count > 0 {
		p.Batch = Num(h.sum / h.count)
	}

	// Utilization over the interval: busy time over provisioned time.
	busy, hasBusy := counterDelta(prev, cur, key{name: mBusy, model: model})
	if hasBusy && hasInst && dt > 0 {
		n := inst
		if pi, had := prev.vals[key{name: mInstances, model: model}]; had {
			n = (pi + inst) / 2
		}
		if n > 0 {
			p.Utilization = Num(min(1, max(0, busy/(dt*n))))
		} else {
			p.Utilization = nan
		}
	}

	// Cost per 1k ok requests by mode. The cost counter is by class and
	// mode, the request counter by class only: a class's ok requests are
	// shared out among the modes in proportion to the class's cost in each
	// (exact whenever a class ran in one mode during the interval).
	costBy, reqBy := map[string]float64{}, map[string]float64{}
	var costAll, reqAll float64
	hasCost := false
	for _, c := range classes {
		var byMode [3]float64
		var total float64
		for i, m := range modes {
			d, has := counterDelta(prev, cur, key{mCost, model, c, m})
			hasCost = hasCost || has
			byMode[i] = d
			total += d
		}
		costAll += total
		reqAll += ok[c]
		for i, m := range modes {
			costBy[m] += byMode[i]
			if total > 0 {
				reqBy[m] += ok[c] * byMode[i] / total
			}
		}
	}
	if hasCost {
		for _, m := range modes {
			if reqBy[m] > 0 {
				p.CostPer1k[m] = Num(costBy[m] / reqBy[m] * 1000)
			}
		}
		if reqAll > 0 {
			p.CostPer1k["all"] = Num(costAll / reqAll * 1000)
		}
	}

	// Running saving against one-by-one execution at the measured batch-1
	// latency, over the intervals in which that latency was known.
	lat1, hasLat1 := cur.vals[key{mBatchLat, model, "1", ""}]
	if hasLat1 && lat1 > 0 && hasInf && inf > 0 {
		actual, known := 0.0, false
		switch {
		case pricePerHour > 0 && hasCost:
			actual, known = costAll*3600/pricePerHour, true
		case hasBusy:
			actual, known = busy, true
		}
		if known {
			acc.actual += actual
			acc.alone += inf * lat1
		}
	}
	if acc.alone > 0 {
		p.Saving = Num(1 - acc.actual/acc.alone)
	}
	return p
}

// ms converts seconds to milliseconds.
func ms(s float64) Num { return Num(s * 1000) }
