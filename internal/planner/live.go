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
	for _, p := range points {
		if p.MeanMS <= 0 {
			continue
		}
		med, p99 := lognormalQuantiles(p.MeanMS, p.StdMS)
		if p.P50MS > 0 && p.P99MS >= p.P50MS {
			med, p99 = p.P50MS, p.P99MS
		}
		out.Points = append(out.Points, Point{BatchSize: p.BatchSize, Instances: max(instances, 1), Threads: 1,
			P50: msDur(med), P99: msDur(p99), ItemsPerSec: float64(max(instances, 1)*p.BatchSize) / (p.MeanMS / 1e3)})
	}
	out.Overhead.P50, out.Overhead.P99 = quantilesOf(overhead)
	out.Dispatch.P50, out.Dispatch.P99 = quantilesOf(dispatch)
	return out
}

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
