// Package profile measures a model on the real runtime at each batch size
// and execution configuration (instances x threads per instance), and picks
// a batch size and configuration under memory and latency limits.
//
// Every figure is measured: latency per batch (p50, p99), throughput,
// memory (peak resident set over the process's footprint before the
// configuration's sessions were opened, and its growth from the previous
// batch size), and the cost per 1k items at a configured instance price,
// derived from the measured throughput.
package profile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/loadgen"
)

// Config is an execution configuration: Instances sessions of Threads
// intra-op threads each, all running batches at once.
type Config struct {
	Instances int `json:"instances"`
	Threads   int `json:"threads"`
}

func (c Config) String() string { return fmt.Sprintf("%dx%d", c.Instances, c.Threads) }

// Point is one measured batch size in one configuration.
type Point struct {
	BatchSize int `json:"batch_size"`
	Instances int `json:"instances"`
	Threads   int `json:"threads"`
	// P50MS and P99MS are the latency of one batch on one instance while
	// all the configuration's instances run.
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
	// ItemsPerSec is the throughput of all instances together.
	ItemsPerSec float64 `json:"items_per_sec"`
	// MemoryBytes is the peak resident set while the point ran, over the
	// process's resident set before the configuration's sessions were
	// opened: the sessions, their weights and the runtime's arenas. (Where
	// the kernel cannot reset the peak, the resident set after the point.)
	MemoryBytes int64 `json:"memory_bytes"`
	// ArenaGrowthBytes is MemoryBytes minus the previous (smaller) batch
	// size's in the same configuration: what this batch size added.
	ArenaGrowthBytes int64 `json:"arena_growth_bytes"`
	// CostPer1k is the price of 1,000 items at this throughput, the
	// configuration's instances fully busy.
	CostPer1k float64 `json:"cost_per_1k"`
	Batches   int     `json:"batches"`
}

// Config returns the point's execution configuration.
func (p Point) Config() Config { return Config{p.Instances, p.Threads} }

// Options configure Run.
type Options struct {
	// Open opens a session of the model with threads intra-op threads.
	Open func(threads int) (backend.Session, error)
	// Sizes are the batch sizes, ascending; Configs the configurations.
	Sizes   []int
	Configs []Config
	// Duration is how long each point runs after its warmup.
	Duration time.Duration
	// PricePerInstanceHour prices CostPer1k (USD).
	PricePerInstanceHour float64
	// Progress, if set, receives each point as it is measured.
	Progress func(Point)
}

// Sizes returns the batch sizes to profile up to maxBatch: the powers of
// two, maxBatch itself, and the preferred sizes, ascending and unique.
func Sizes(maxBatch int, preferred []int) []int {
	var out []int
	for n := 1; n <= maxBatch; n *= 2 {
		out = append(out, n)
	}
	out = append(out, maxBatch)
	for _, n := range preferred {
		if n >= 1 && n <= maxBatch {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Configs returns the configurations that use the machine's cpus: every
// instances x threads whose product is cpus, and one single-threaded
// instance (the per-request baseline).
func Configs(cpus int) []Config {
	cpus = max(cpus, 1)
	out := []Config{{1, 1}}
	for i := 1; i <= cpus; i++ {
		if cpus%i == 0 && !(i == 1 && cpus == 1) {
			out = append(out, Config{Instances: i, Threads: cpus / i})
		}
	}
	slices.SortFunc(out, func(a, b Config) int {
		return cmp.Or(cmp.Compare(a.Instances*a.Threads, b.Instances*b.Threads), cmp.Compare(a.Instances, b.Instances))
	})
	return slices.Compact(out)
}

// Run measures every configuration at every batch size. Each
// configuration's sessions are opened once, run at each size (all
// instances at once, each back to back, as the server's workers run them),
// and closed before the next configuration.
func Run(ctx context.Context, opt Options) ([]Point, error) {
	if opt.Open == nil || len(opt.Sizes) == 0 || len(opt.Configs) == 0 || opt.Duration <= 0 {
		return nil, errors.New("profile: Open, Sizes, Configs and Duration are required")
	}
	var points []Point
	for _, c := range opt.Configs {
		ps, err := runConfig(ctx, opt, c)
		if err != nil {
			return points, fmt.Errorf("profile: %s: %w", c, err)
		}
		points = append(points, ps...)
	}
	return points, nil
}

func runConfig(ctx context.Context, opt Options, c Config) ([]Point, error) {
	base, _ := residentBytes()
	sessions := make([]backend.Session, 0, c.Instances)
	defer func() {
		for _, s := range sessions {
			_ = s.Close()
		}
	}()
	for range c.Instances {
		s, err := opt.Open(c.Threads)
		if err != nil {
			return nil, err
		}
		sessions = append(sessions, s)
	}
	var out []Point
	var prevMem int64
	for _, n := range opt.Sizes {
		peakOK := resetPeak()
		results := make([]*loadgen.RawResult, len(sessions))
		errs := make([]error, len(sessions))
		var wg sync.WaitGroup
		for i, s := range sessions {
			wg.Go(func() { results[i], errs[i] = loadgen.Raw(ctx, s, n, opt.Duration) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return out, err
		}
		p := Point{BatchSize: n, Instances: c.Instances, Threads: c.Threads}
		for _, r := range results {
			p.ItemsPerSec += r.ItemsPerSec
			p.Batches += r.Batches
		}
		// The instances' quantiles: the median of their p50s and the
		// worst p99.
		p50s, p99s := make([]time.Duration, 0, len(results)), make([]time.Duration, 0, len(results))
		for _, r := range results {
			p50s = append(p50s, r.P50)
			p99s = append(p99s, r.P99)
		}
		slices.Sort(p50s)
		p.P50MS = ms(p50s[len(p50s)/2])
		p.P99MS = ms(slices.Max(p99s))
		// Without a peak reset, VmHWM is the process's lifetime peak: the
		// resident set after the point is the measure then.
		mem, ok := peakBytes()
		if !peakOK {
			mem, ok = residentBytes()
		}
		if peak := mem; ok && base > 0 {
			p.MemoryBytes = max(peak-base, 0)
			if len(out) > 0 {
				p.ArenaGrowthBytes = p.MemoryBytes - prevMem
			}
			prevMem = p.MemoryBytes
		}
		if p.ItemsPerSec > 0 {
			p.CostPer1k = float64(c.Instances) * opt.PricePerInstanceHour / 3600 / p.ItemsPerSec * 1000
		}
		out = append(out, p)
		if opt.Progress != nil {
			opt.Progress(p)
		}
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Limits constrain Choose. Zero fields do not constrain.
type Limits struct {
	MemoryBytes  int64
	BatchLatency time.Duration // on the batch's p99
}

// Choice is Choose's answer.
type Choice struct {
	BatchSize   int     `json:"batch_size"`
	Instances   int     `json:"instances"`
	Threads     int     `json:"threads"`
	ItemsPerSec float64 `json:"items_per_sec"`
	P99MS       float64 `json:"p99_ms"`
	// MemorySafeMaxBatch is the largest measured batch size whose memory
	// fits the limit, in the chosen configuration.
	MemorySafeMaxBatch int `json:"memory_safe_max_batch"`
	// KneeBatchSize is the smallest batch size of the chosen
	// configuration that reaches 90% of its highest throughput: past it,
	// bigger batches buy little throughput for their latency.
	KneeBatchSize int      `json:"knee_batch_size"`
	Reasons       []string `json:"reasons"`
}

// KneeFraction defines the knee of a throughput curve: the smallest batch
// size reaching this fraction of the curve's highest throughput.
const KneeFraction = 0.9

// Choose picks, among the points that fit the limits, the one with the
// highest measured throughput (ties: the smaller batch, then the fewer
// instances), and explains it.
func Choose(points []Point, lim Limits) (*Choice, error) {
	if len(points) == 0 {
		return nil, errors.New("profile: no points to choose from")
	}
	fits := func(p Point) (bool, string) {
		if lim.MemoryBytes > 0 && p.MemoryBytes > lim.MemoryBytes {
			return false, fmt.Sprintf("memory %d B over the %d B limit", p.MemoryBytes, lim.MemoryBytes)
		}
		if lim.BatchLatency > 0 && p.P99MS > ms(lim.BatchLatency) {
			return false, fmt.Sprintf("p99 %.2f ms over the %s limit", p.P99MS, lim.BatchLatency)
		}
		return true, ""
	}
	var best *Point
	excluded := 0
	for i := range points {
		p := &points[i]
		if ok, _ := fits(*p); !ok {
			excluded++
			continue
		}
		if best == nil || p.ItemsPerSec > best.ItemsPerSec ||
			(p.ItemsPerSec == best.ItemsPerSec && (p.BatchSize < best.BatchSize ||
				(p.BatchSize == best.BatchSize && p.Instances < best.Instances))) {
			best = p
		}
	}
	if best == nil {
		_, why := fits(points[0])
		return nil, fmt.Errorf("profile: no measured point fits the limits (e.g. batch %d on %s: %s)", points[0].BatchSize, points[0].Config(), why)
	}
	c := &Choice{BatchSize: best.BatchSize, Instances: best.Instances, Threads: best.Threads, ItemsPerSec: best.ItemsPerSec, P99MS: best.P99MS}
	var curve []Point
	for _, p := range points {
		if p.Config() == best.Config() {
			curve = append(curve, p)
		}
	}
	slices.SortFunc(curve, func(a, b Point) int { return cmp.Compare(a.BatchSize, b.BatchSize) })
	top := 0.0
	for _, p := range curve {
		top = max(top, p.ItemsPerSec)
		if ok := lim.MemoryBytes <= 0 || p.MemoryBytes <= lim.MemoryBytes; ok {
			c.MemorySafeMaxBatch = p.BatchSize
		}
	}
	for _, p := range curve {
		if p.ItemsPerSec >= KneeFraction*top {
			c.KneeBatchSize = p.BatchSize
			break
		}
	}
	one := curve[0]
	c.Reasons = append(c.Reasons,
		fmt.Sprintf("Batch %d on %d instance(s) x %d thread(s) has the highest measured throughput, %.0f items/s, of the %d points that fit the limits (%d did not).",
			best.BatchSize, best.Instances, best.Threads, best.ItemsPerSec, len(points)-excluded, excluded))
	if one.ItemsPerSec > 0 && one.BatchSize < best.BatchSize {
		c.Reasons = append(c.Reasons, fmt.Sprintf("That is %.1fx batch %d's %.0f items/s in the same configuration, at a p99 of %.2f ms per batch against %.2f ms.",
			best.ItemsPerSec/one.ItemsPerSec, one.BatchSize, one.ItemsPerSec, best.P99MS, one.P99MS))
	}
	if lim.BatchLatency > 0 {
		c.Reasons = append(c.Reasons, fmt.Sprintf("Its batch p99 of %.2f ms fits the %s latency limit.", best.P99MS, lim.BatchLatency))
	}
	if lim.MemoryBytes > 0 {
		c.Reasons = append(c.Reasons, fmt.Sprintf("It uses %d MB of memory against the %d MB limit; the largest memory-safe batch measured there is %d.",
			best.MemoryBytes>>20, lim.MemoryBytes>>20, c.MemorySafeMaxBatch))
	}
	c.Reasons = append(c.Reasons, fmt.Sprintf("The knee of that curve is batch %d: the smallest size reaching %.0f%% of its top throughput (%.0f items/s).",
		c.KneeBatchSize, 100*KneeFraction, top))
	return c, nil
}
