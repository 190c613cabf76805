// Package perfmodel keeps a live, measured model of a model's execution
// latency per batch size. The scheduler feeds it every executed batch; the
// scheduler's deadline checks, the cost ledger's one-by-one baseline, the
// planner and the adaptive policies read it.
//
// Nothing in it is a constant: a batch size that was never executed is
// estimated by interpolating between measured neighbours, and Estimate
// reports false when nothing has been measured yet.
package perfmodel

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Alpha is the weight of a new observation in the moving average.
const Alpha = 0.1

// Point is the measured latency of one batch size.
type Point struct {
	BatchSize int     `json:"batch_size"`
	Count     int64   `json:"count"`
	MeanMS    float64 `json:"mean_ms"` // exponentially weighted mean
	MinMS     float64 `json:"min_ms"`
	// StdMS is the exponentially weighted standard deviation of the
	// batch latency (same weights as MeanMS): the spread the planner
	// samples service times with.
	StdMS  float64 `json:"std_ms"`
	LastMS float64 `json:"last_ms"`
	// P50MS and P99MS are the median and 99th percentile of the last
	// Window batches of this size.
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
	// OverheadP50MS and OverheadP99MS are the median and 99th percentile
	// of the per-request overhead (see ObserveOverhead) of the last Window
	// requests served in batches of this size: the answers of a batch are
	// encoded and written together, so a request of a large batch waits
	// for CPU behind its batch-mates. Zero when none was observed.
	OverheadP50MS float64 `json:"overhead_p50_ms,omitempty"`
	OverheadP99MS float64 `json:"overhead_p99_ms,omitempty"`
	// ItemsPerSec is BatchSize / mean latency.
	ItemsPerSec float64 `json:"items_per_sec"`
}

type stat struct {
	count int64
	ewma  float64 // seconds
	ewvar float64 // seconds^2
	min   float64
	last  float64
	// recent holds the last Window observations (a ring once full), for
	// measured quantiles.
	recent []float32
	next   int
}

// Window is how many recent observations per batch size (and of the
// per-request overhead) the measured quantiles cover.
const Window = 512

// snapshot copies st, its recent observations included, so that their
// quantiles can be computed outside the lock.
func (st *stat) snapshot() stat {
	c := *st
	c.recent = slices.Clone(st.recent)
	return c
}

// quantiles returns the p50 and p99 of the recent observations, seconds.
func (st *stat) quantiles() (p50, p99 float64) {
	if len(st.recent) == 0 {
		return 0, 0
	}
	v := st.recent // a snapshot's own copy
	slices.Sort(v)
	// Nearest rank: the smallest value with at least q of them at or
	// below it.
	at := func(q float64) float64 { return float64(v[max(int(math.Ceil(q*float64(len(v))))-1, 0)]) }
	return at(0.5), at(0.99)
}

// Model is a per-batch-size latency model. It is safe for concurrent use.
type Model struct {
	mu    sync.RWMutex
	stats map[int]*stat
	sizes []int // sorted keys of stats
	// dmu guards overhead and dispatch, apart from mu, which the
	// scheduler's batch formation reads.
	dmu      sync.Mutex
	overhead stat // per request, outside the scheduler
	// overheadBySize is the same, by the size of the request's batch.
	overheadBySize map[int]*stat
	dispatch       stat // per timer-fired batch: its start after the time it was due
}

// New returns an empty model.
func New() *Model { return &Model{stats: map[int]*stat{}, overheadBySize: map[int]*stat{}} }

// Observe records that a batch of n items took d to execute.
func (m *Model) Observe(n int, d time.Duration) {
	if n <= 0 || d < 0 {
		return
	}
	s := d.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.stats[n]
	if !ok {
		st = &stat{}
		m.stats[n] = st
		i, _ := slices.BinarySearch(m.sizes, n)
		m.sizes = slices.Insert(m.sizes, i, n)
	}
	st.add(s)
}

// add records one observation of s seconds. The first few use a plain
// running mean so that one cold-start outlier does not dominate for long.
func (st *stat) add(s float64) {
	if st.count == 0 {
		st.ewma, st.min = s, s
	}
	st.count++
	diff := s - st.ewma
	if st.count <= 10 {
		// Welford's running mean and variance.
		w := 1 / float64(st.count)
		st.ewma += diff * w
		st.ewvar += (diff*(s-st.ewma) - st.ewvar) * w
	} else {
		st.ewma += Alpha * diff
		st.ewvar = (1 - Alpha) * (st.ewvar + Alpha*diff*diff)
	}
	st.min = min(st.min, s)
	st.last = s
	if len(st.recent) < Window {
		st.recent = append(st.recent, float32(s))
	} else {
		st.recent[st.next] = float32(s)
		st.next = (st.next + 1) % Window
	}
}

// ObserveOverhead records the time one request, served in a batch of n
// items (0: unknown), spent in the server outside the scheduler's queue
// and batch: reading and decoding it, encoding and writing its answer.
func (m *Model) ObserveOverhead(n int, d time.Duration) {
	if d < 0 {
		return
	}
	m.dmu.Lock()
	defer m.dmu.Unlock()
	m.overhead.add(d.Seconds())
	if n > 0 && n <= maxTrackedSize {
		st := m.overheadBySize[n]
		if st == nil {
			st = &stat{}
			m.overheadBySize[n] = st
		}
		st.add(d.Seconds())
	}
}

// maxTrackedSize bounds the batch sizes whose overhead is kept apart.
const maxTrackedSize = 4096

// ObserveDispatch records how late a batch started after the moment the
// scheduler's timer was due to fire it (timer and goroutine wake-up, lock,
// formation): time in which the batch is ready but no worker runs it.
func (m *Model) ObserveDispatch(d time.Duration) {
	if d < 0 {
		return
	}
	m.dmu.Lock()
	defer m.dmu.Unlock()
	m.dispatch.add(d.Seconds())
}

// Dispatch returns the measured dispatch delay (Count 0: none yet).
func (m *Model) Dispatch() Overhead {
	m.dmu.Lock()
	st := m.dispatch.snapshot()
	m.dmu.Unlock()
	return st.summary()
}

// Overhead is the per-request overhead measured by ObserveOverhead.
type Overhead struct {
	Count  int64   `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	StdMS  float64 `json:"std_ms"`
	// P50MS and P99MS cover the last Window requests.
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
}

// Overhead returns the measured per-request overhead (Count 0: none yet).
func (m *Model) Overhead() Overhead {
	m.dmu.Lock()
	st := m.overhead.snapshot()
	m.dmu.Unlock()
	return st.summary()
}

func (st *stat) summary() Overhead {
	p50, p99 := st.quantiles()
	return Overhead{Count: st.count, MeanMS: st.ewma * 1e3, StdMS: math.Sqrt(max(st.ewvar, 0)) * 1e3, P50MS: p50 * 1e3, P99MS: p99 * 1e3}
}

// Estimate returns the expected execution time of a batch of n items. Sizes
// that were measured return their mean; others are interpolated linearly
// between the nearest measured sizes, or extrapolated at the per-item cost
// of the nearest measured size. ok is false when nothing is measured.
func (m *Model) Estimate(n int) (d time.Duration, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.sizes) == 0 || n <= 0 {
		return 0, false
	}
	if st, ok := m.stats[n]; ok {
		return seconds(st.ewma), true
	}
	i, _ := slices.BinarySearch(m.sizes, n)
	switch {
	case i == 0:
		// Below the smallest measured size: scale its latency down per
		// item, but not below half of it, since fixed per-batch overheads
		// dominate at small sizes.
		lo := m.sizes[0]
		s := m.stats[lo].ewma
		return seconds(max(s*float64(n)/float64(lo), s/2)), true
	case i == len(m.sizes):
		hi := m.sizes[len(m.sizes)-1]
		s := m.stats[hi].ewma
		return seconds(s * float64(n) / float64(hi)), true
	}
	lo, hi := m.sizes[i-1], m.sizes[i]
	a, b := m.stats[lo].ewma, m.stats[hi].ewma
	f := float64(n-lo) / float64(hi-lo)
	return seconds(a + f*(b-a)), true
}

// Measured reports whether batch size n itself has been observed.
func (m *Model) Measured(n int) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.stats[n]
	return ok
}

// Points returns the measured points sorted by batch size.
func (m *Model) Points() []Point {
	m.mu.RLock()
	sizes := slices.Clone(m.sizes)
	snaps := make([]stat, len(sizes))
	for i, n := range sizes {
		snaps[i] = m.stats[n].snapshot()
	}
	m.mu.RUnlock()
	over := make([]stat, len(sizes))
	m.dmu.Lock()
	for i, n := range sizes {
		if st := m.overheadBySize[n]; st != nil {
			over[i] = st.snapshot()
		}
	}
	m.dmu.Unlock()
	out := make([]Point, 0, len(sizes))
	for i, n := range sizes {
		st := &snaps[i]
		p50, p99 := st.quantiles()
		p := Point{BatchSize: n, Count: st.count, MeanMS: st.ewma * 1e3, MinMS: st.min * 1e3, LastMS: st.last * 1e3,
			StdMS: math.Sqrt(max(st.ewvar, 0)) * 1e3, P50MS: p50 * 1e3, P99MS: p99 * 1e3}
		if o50, o99 := over[i].quantiles(); o50 > 0 {
			p.OverheadP50MS, p.OverheadP99MS = o50*1e3, o99*1e3
		}
		if st.ewma > 0 {
			p.ItemsPerSec = float64(n) / st.ewma
		}
		out = append(out, p)
	}
	return out
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
