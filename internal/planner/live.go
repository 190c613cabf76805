package planner

import (
	"math"
	"time"

	"github.com/infergate/infergate/internal/perfmodel"
)

// FromLive builds a profile from a running server's live latency model:
// per batch size, the moving mean and spread of the batch latency the
// server measured while it served (so contention with request handling is
// in it), and the measured per-request overhead outside the scheduler.
// Each takes the measured median and 99th percentile of its recent
// observations; without them (an older server), a lognormal with the
// measured mean and standard deviation.
// instances is the number of instances that ran concurrently.
func FromLive(model string, instances int, points []perfmodel.Point, overhead, dispatch perfmodel.Overhead) *Profile {
	out := &Profile{Model: model}
	type fit struct {
		p       perfmodel.Point
		med     float64
		sigma   float64 // of the lognormal through med and the p99
		samples float64 // behind the quantiles
	}
	var fits []fit
	var wsum, w2 float64
	for _, p := range points {
		if p.MeanMS <= 0 {
			continue
		}
		med, p99 := lognormalQuantiles(p.MeanMS, p.StdMS)
		if p.P50MS > 0 && p.P99MS >= p.P50MS {
			med, p99 = p.P50MS, p.P99MS
		}
		f := fit{p: p, med: med, sigma: math.Log(p99/med) / z99, samples: float64(min(p.Count, perfmodel.Window))}
		fits = append(fits, f)
		wsum += f.samples
		w2 += f.samples * f.sigma * f.sigma
	}
	// A size's p99 rests on its slowest few batches: with the hundred-odd
	// batches a size in the middle of the range gets, one stall moves it
	// by half. Each size's spread is therefore shrunk toward the spread
	// pooled over all sizes (the root mean square, weighted by samples),
	// with the weight of shrinkSamples samples; a size with a full window
	// keeps two thirds of its own.
	// (A point without a count, from an older server, keeps its own
	// spread when no point has one, and gets the pooled one otherwise.
	// The shrink is linear in sigma toward a root mean square: a simple
	// weighting, not a posterior.)
	pooled := 0.0
	if wsum > 0 {
		pooled = math.Sqrt(w2 / wsum)
	}
	for _, f := range fits {
		sigma := f.sigma
		if wsum > 0 {
			sigma = (f.samples*f.sigma + shrinkSamples*pooled) / (f.samples + shrinkSamples)
		}
		out.Points = append(out.Points, Point{BatchSize: f.p.BatchSize, Instances: max(instances, 1), Threads: 1,
			P50: msDur(f.med), P99: msDur(f.med * math.Exp(z99*sigma)), ItemsPerSec: float64(max(instances, 1)*f.p.BatchSize) / (f.p.MeanMS / 1e3),
			OverheadP50: msDur(f.p.OverheadP50MS), OverheadP99: msDur(max(f.p.OverheadP99MS, f.p.OverheadP50MS))})
	}
	out.Overhead.P50, out.Overhead.P99 = quantilesOf(overhead)
	out.Dispatch.P50, out.Dispatch.P99 = quantilesOf(dispatch)
	return out
}

// shrinkSamples is the weight, in samples, of the pooled spread in a
// size's spread (see FromLive).
const shrinkSamples = 256

// quantilesOf is a measured delay's median and 99th percentile: measured
// quantiles, or else a lognormal with its mean and deviation.
func quantilesOf(o perfmodel.Overhead) (p50, p99 time.Duration) {
	if o.Count == 0 || o.MeanMS <= 0 {
		return 0, 0
	}
	med, q99 := lognormalQuantiles(o.MeanMS, o.StdMS)
	if o.P50MS > 0 && o.P99MS >= o.P50MS {
		med, q99 = o.P50MS, o.P99MS
	}
	return msDur(med), msDur(q99)
}

// lognormalQuantiles are the median and 99th percentile of the lognormal
// with this mean and standard deviation.
func lognormalQuantiles(mean, std float64) (p50, p99 float64) {
	cv2 := (std / mean) * (std / mean)
	p50 = mean / math.Sqrt(1+cv2)
	return p50, p50 * math.Exp(2.3263*math.Sqrt(math.Log(1+cv2)))
}

func msDur(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
