package planner

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Point is one measured batch size of a profile: the latency of a batch on
// one instance while Instances instances, of Threads threads each, ran
// concurrently.
type Point struct {
	BatchSize int
	Instances int
	Threads   int
	// P50 and P99 are the median and 99th-percentile batch latency.
	P50, P99 time.Duration
	// ItemsPerSec is the throughput measured over all Instances together;
	// 0 when not measured (then it is derived from P50).
	ItemsPerSec float64
	MemoryBytes int64
	// OverheadP50 and OverheadP99: the request overhead (see
	// Profile.Overhead) of requests served in batches of this size, as the
	// server measures it; zero when not measured (the profile's Overhead
	// applies).
	OverheadP50, OverheadP99 time.Duration `json:",omitzero"`
}

// Profile is a model's measured latency for one execution configuration
// (every point has the same Instances and Threads), sorted by BatchSize.
type Profile struct {
	Model  string
	Points []Point
	// Overhead is the time a request spends in the server outside the
	// scheduler (reading, decoding, encoding and writing it), as the
	// server measures it; zero for a profile of the runtime alone. The
	// simulation adds a sample of it (lognormal with this median and 99th
	// percentile) to each request's latency. It does not hold a worker.
	Overhead struct{ P50, P99 time.Duration }
	// Dispatch is how late a batch starts after it is due (timer and
	// wake-up delays), as the server measures it; zero for a profile of
	// the runtime alone. The simulation adds a sample of it to each
	// batch's time on its instance.
	Dispatch struct{ P50, P99 time.Duration }
	// ClientPath is the time a request spends outside the server's
	// handler, as a client measures it (its latency minus the server's
	// X-Infergate-Server-Ms): sending, the network, reading the answer.
	// Zero unless measured (plan --validate measures it with the load
	// generator); the simulation then adds a sample of it to each
	// request's latency, like Overhead.
	ClientPath struct{ P50, P99 time.Duration } `json:",omitzero"`
}

// Validate checks that p has points of one configuration, sorted by
// strictly increasing batch size, with positive latencies.
func (p *Profile) Validate() error {
	if p == nil || len(p.Points) == 0 {
		return errors.New("profile has no measured points")
	}
	first := p.Points[0]
	for i, pt := range p.Points {
		switch {
		case pt.BatchSize < 1:
			return fmt.Errorf("profile point %d: batch size %d, want >= 1", i, pt.BatchSize)
		case i > 0 && pt.BatchSize <= p.Points[i-1].BatchSize:
			return fmt.Errorf("profile point %d: batch size %d after %d; points must be sorted by increasing batch size", i, pt.BatchSize, p.Points[i-1].BatchSize)
		case pt.P50 <= 0:
			return fmt.Errorf("profile point %d (batch %d): p50 %s, want > 0", i, pt.BatchSize, pt.P50)
		case pt.P99 < 0:
			return fmt.Errorf("profile point %d (batch %d): p99 %s, want >= 0", i, pt.BatchSize, pt.P99)
		case pt.Instances != first.Instances || pt.Threads != first.Threads:
			return fmt.Errorf("profile point %d (batch %d): %d instances x %d threads, but point 0 has %d x %d; a profile holds one configuration",
				i, pt.BatchSize, pt.Instances, pt.Threads, first.Instances, first.Threads)
		case pt.ItemsPerSec < 0:
			return fmt.Errorf("profile point %d (batch %d): negative items/s", i, pt.BatchSize)
		}
	}
	return nil
}

// MaxBatchSize is the largest measured batch size, 0 for an empty profile.
func (p *Profile) MaxBatchSize() int {
	if p == nil || len(p.Points) == 0 {
		return 0
	}
	return p.Points[len(p.Points)-1].BatchSize
}

// Latency returns the p50 and p99 latency of a batch of n, as
// internal/perfmodel estimates it: a measured size returns its values;
// between measured sizes they are interpolated linearly; above the largest
// they are extrapolated at its per-item cost; below the smallest they are
// scaled down per item, but not below half of it. It returns zeros for an
// empty profile or n < 1.
func (p *Profile) Latency(n int) (p50, p99 time.Duration) {
	if p == nil || len(p.Points) == 0 || n < 1 {
		return 0, 0
	}
	pts := p.Points
	i, found := slices.BinarySearchFunc(pts, n, func(pt Point, n int) int { return pt.BatchSize - n })
	if found {
		return pts[i].P50, pts[i].P99
	}
	interp := func(f func(Point) time.Duration) time.Duration {
		switch {
		case i == 0:
			lo := pts[0]
			s := float64(f(lo))
			return time.Duration(max(s*float64(n)/float64(lo.BatchSize), s/2))
		case i == len(pts):
			hi := pts[len(pts)-1]
			return time.Duration(float64(f(hi)) * float64(n) / float64(hi.BatchSize))
		}
		lo, hi := pts[i-1], pts[i]
		a, b := float64(f(lo)), float64(f(hi))
		frac := float64(n-lo.BatchSize) / float64(hi.BatchSize-lo.BatchSize)
		return time.Duration(a + frac*(b-a))
	}
	return interp(func(pt Point) time.Duration { return pt.P50 }), interp(func(pt Point) time.Duration { return pt.P99 })
}

// instances is the number of instances the profile was measured with.
func (p *Profile) instances() int {
	if len(p.Points) == 0 || p.Points[0].Instances < 1 {
		return 1
	}
	return p.Points[0].Instances
}

// itemsPerSec is the measured throughput at batch size n over the
// profile's instances: the point's ItemsPerSec when n was measured with
// one, else derived from the (interpolated) p50.
func (p *Profile) itemsPerSec(n int) float64 {
	for _, pt := range p.Points {
		if pt.BatchSize == n && pt.ItemsPerSec > 0 {
			return pt.ItemsPerSec
		}
	}
	p50, _ := p.Latency(n)
	if p50 <= 0 {
		return 0
	}
	return float64(p.instances()) * float64(n) / p50.Seconds()
}
