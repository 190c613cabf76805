package planner

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// The serving modes.
const (
	ModeRealtime = "realtime"
	ModeHybrid   = "hybrid"
	ModeBatch    = "batch"
)

// The batch-formation policies, as internal/batching names them.
const (
	PolicySingle = "single"
	PolicySize   = "size"
	PolicyTime   = "time"
	PolicyHybrid = "hybrid"
)

// z99 is the standard normal quantile of 0.99: a lognormal's sigma is
// ln(p99/p50)/z99.
const z99 = 2.3263478740408408

// never is the time of an event that is not scheduled.
const never = time.Duration(math.MaxInt64)

// Settings is one serving configuration to simulate.
type Settings struct {
	// Mode is "realtime", "hybrid" or "batch".
	Mode string
	// Policy is the batch-formation policy of realtime and hybrid mode:
	// "single", "time", "size" or "hybrid" (the default, as in the server).
	Policy string
	// MaxBatchSize bounds a batch; 0 means the profile's largest size.
	// Single forces 1. Batch mode runs at the profile's largest size
	// unless it is set.
	MaxBatchSize int
	// MaxQueueDelay is the hybrid policy's longest wait of the oldest
	// request; BatchTimeout the time policy's tick period.
	MaxQueueDelay, BatchTimeout time.Duration
	// Instances is the number of replicas of the profiled configuration,
	// each with the profile's per-instance latency; 0 means 1.
	Instances int
	// Window is batch mode's completion window: the requests that arrive
	// in each window run as one job at its end. 0 runs everything as one
	// job at the last arrival.
	Window time.Duration
}

// Validate reports settings that the server would refuse or the simulation
// cannot mean.
func (s Settings) Validate() error {
	switch s.Mode {
	case ModeRealtime, ModeHybrid:
		switch s.Policy {
		case PolicySingle, PolicySize, PolicyHybrid, "":
		case PolicyTime:
			if s.BatchTimeout <= 0 {
				return fmt.Errorf("policy time needs a batch timeout > 0")
			}
		default:
			return fmt.Errorf("policy %q: want single, size, time or hybrid", s.Policy)
		}
		if s.MaxQueueDelay < 0 {
			return fmt.Errorf("max queue delay must be >= 0")
		}
	case ModeBatch:
		if s.Window < 0 {
			return fmt.Errorf("batch window must be >= 0")
		}
	default:
		return fmt.Errorf("mode %q: want realtime, hybrid or batch", s.Mode)
	}
	if s.MaxBatchSize < 0 || s.Instances < 0 {
		return fmt.Errorf("max batch size and instances must be >= 0")
	}
	return nil
}

// String describes the settings in words, for reasons and reports.
func (s Settings) String() string {
	inst := plural(s.Instances, "instance")
	switch {
	case s.Mode == ModeBatch:
		return fmt.Sprintf("batch, %s window, %s", fmtDur(s.Window), inst)
	case s.Policy == PolicySingle:
		return fmt.Sprintf("%s, no batching, %s", s.Mode, inst)
	case s.Policy == PolicyTime:
		return fmt.Sprintf("%s, time policy every %s, max batch %d, %s", s.Mode, fmtDur(s.BatchTimeout), s.MaxBatchSize, inst)
	case s.Policy == PolicySize:
		return fmt.Sprintf("%s, size policy at %d, %s", s.Mode, s.MaxBatchSize, inst)
	}
	return fmt.Sprintf("%s, max batch %d, max queue delay %s, %s", s.Mode, s.MaxBatchSize, fmtDur(s.MaxQueueDelay), inst)
}

// Result is the outcome of simulating one setting.
type Result struct {
	// Settings as simulated, with defaults filled in.
	Settings Settings
	// P50 and P99 of request latency (completion - arrival).
	P50, P99 time.Duration
	// SLOAttainment is the share of requests with latency <= SLO.
	SLOAttainment float64
	// ThroughputRPS is requests over the simulated wall span.
	ThroughputRPS float64
	// AvgBatch is the mean number of requests per executed batch.
	AvgBatch float64
	// Utilization is busy instance time over provisioned instance time (1
	// in batch mode, where instances are provisioned only while busy).
	Utilization float64
	// CostPer1k is the loaded cost of 1,000 requests: provisioned
	// instance time x price. CostPer1kBusy prices only the busy time.
	// CostPerMonth is the loaded cost of 30 days at the arrivals' mean
	// rate. All in USD.
	CostPer1k, CostPer1kBusy, CostPerMonth float64
	// MeetsSLO reports P99 <= SLO on a setting that keeps up with the
	// arrivals (not Overloaded).
	MeetsSLO bool
	// Overloaded reports that the instances needed more busy time than the
	// arrivals lasted (Busy > Instances x (last - first arrival)): the
	// demand exceeds the capacity, and in steady traffic the queue would
	// grow without bound. A finite simulation of such a queue ends only
	// because the arrivals do, and could otherwise meet a long SLO. Never
	// set in batch mode, whose jobs may run past the arrivals.
	Overloaded bool

	// The simulated quantities the figures above derive from.
	Requests int
	Batches  int
	// Span is the wall span, last completion - first arrival.
	Span time.Duration
	// Busy is the instance time spent executing batches, summed over
	// instances.
	Busy time.Duration
	// OfferedRPS is the mean arrival rate, requests over the span from the
	// first to the last arrival.
	OfferedRPS float64
}

// Simulate runs arrivals (sorted offsets) through the settings on profile p
// and reports latency, throughput and cost. slo is every request's latency
// objective and timeout (0: none; then every setting meets it); price is
// USD per instance-hour; seed seeds the service-time sampling. The same
// inputs give the same result.
//
// After the last arrival the simulated server closes and, like
// Scheduler.Close, flushes what is queued regardless of policy; so a finite
// workload does not end with a partial batch held until its deadline.
//
// Settings are expected to be valid (see Settings.Validate); an unknown
// policy simulates as hybrid, a time policy without a period as hybrid
// with no delay.
func Simulate(p *Profile, arrivals []time.Duration, s Settings, slo time.Duration, pricePerInstanceHour float64, seed uint64) Result {
	s = s.withDefaults(p)
	res := Result{Settings: s}
	n := len(arrivals)
	if n == 0 || p == nil || len(p.Points) == 0 {
		res.MeetsSLO = slo <= 0
		return res
	}
	rng := rand.New(rand.NewPCG(seed, seed^0xda942042e4dd58b5))
	lat := make([]time.Duration, n)
	size := make([]int32, n) // of each request's batch
	var out simOut
	if s.Mode == ModeBatch {
		out = simulateBatch(p, arrivals, s, rng, lat, size)
	} else {
		out = simulateOnline(p, arrivals, s, slo, rng, lat, size)
	}
	addOverhead(p, lat, size, rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15, seed)))
	addDelay(lat, p.ClientPath.P50, p.ClientPath.P99, rand.New(rand.NewPCG(seed^0x6a09e667f3bcc909, seed)))

	res.Requests, res.Batches, res.Busy = n, out.batches, out.busy
	res.Span = out.last - arrivals[0]
	res.AvgBatch = float64(n) / float64(out.batches)
	if res.Span > 0 {
		res.ThroughputRPS = float64(n) / res.Span.Seconds()
	}
	res.OfferedRPS = res.ThroughputRPS
	if d := arrivals[n-1] - arrivals[0]; d > 0 {
		res.OfferedRPS = float64(n) / d.Seconds()
	}
	res.CostPer1kBusy = res.Busy.Hours() * pricePerInstanceHour / float64(n) * 1000
	if s.Mode == ModeBatch {
		res.CostPer1k = res.CostPer1kBusy
		if res.Busy > 0 {
			res.Utilization = 1
		}
	} else {
		res.CostPer1k = float64(s.Instances) * res.Span.Hours() * pricePerInstanceHour / float64(n) * 1000
		if res.Span > 0 {
			res.Utilization = res.Busy.Seconds() / (float64(s.Instances) * res.Span.Seconds())
		}
	}
	res.CostPerMonth = res.CostPer1k / 1000 * res.OfferedRPS * (30 * 24 * time.Hour).Seconds()

	within := n
	if slo > 0 {
		within = 0
		for _, l := range lat {
			if l <= slo {
				within++
			}
		}
	}
	res.SLOAttainment = float64(within) / float64(n)
	slices.Sort(lat)
	res.P50, res.P99 = quantile(lat, 0.50), quantile(lat, 0.99)
	if s.Mode != ModeBatch {
		if d := arrivals[n-1] - arrivals[0]; d > 0 {
			res.Overloaded = res.Busy.Seconds() > float64(s.Instances)*d.Seconds()
		}
	}
	res.MeetsSLO = (slo <= 0 || res.P99 <= slo) && !res.Overloaded
	return res
}

// quantile is the nearest-rank q-quantile of sorted values.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// withDefaults fills in what the caller left zero, as the server does.
func (s Settings) withDefaults(p *Profile) Settings {
	s.Instances = max(s.Instances, 1)
	if s.MaxBatchSize <= 0 {
		s.MaxBatchSize = max(p.MaxBatchSize(), 1)
	}
	if s.Mode == ModeBatch {
		s.Policy = ""
		return s
	}
	switch s.Policy {
	case PolicySingle:
		s.MaxBatchSize = 1
	case PolicySize, PolicyHybrid:
	case PolicyTime:
		if s.BatchTimeout <= 0 {
			s.Policy, s.MaxQueueDelay = PolicyHybrid, 0
		}
	default:
		s.Policy = PolicyHybrid
	}
	return s
}

// addOverhead adds to each latency a sample of the request overhead: the
// one measured for its batch's size (the nearest measured size), or else
// the profile's.
func addOverhead(p *Profile, lat []time.Duration, size []int32, rng *rand.Rand) {
	type dist struct{ p50, sigma float64 }
	mk := func(p50, p99 time.Duration) dist {
		d := dist{p50: float64(p50)}
		if p99 > p50 {
			d.sigma = math.Log(float64(p99)/float64(p50)) / z99
		}
		return d
	}
	global := mk(p.Overhead.P50, p.Overhead.P99)
	var measured []Point
	for _, pt := range p.Points {
		if pt.OverheadP50 > 0 {
			measured = append(measured, pt)
		}
	}
	bySize := map[int32]dist{}
	for i := range lat {
		d := global
		if len(measured) > 0 {
			var ok bool
			if d, ok = bySize[size[i]]; !ok {
				j, _ := slices.BinarySearchFunc(measured, int(size[i]), func(pt Point, n int) int { return pt.BatchSize - n })
				switch {
				case j == len(measured):
					j--
				case j > 0 && measured[j].BatchSize != int(size[i]) &&
					int(size[i])-measured[j-1].BatchSize < measured[j].BatchSize-int(size[i]):
					j--
				}
				d = mk(measured[j].OverheadP50, measured[j].OverheadP99)
				bySize[size[i]] = d
			}
		}
		if d.p50 > 0 {
			lat[i] += time.Duration(d.p50 * math.Exp(d.sigma*rng.NormFloat64()))
		}
	}
}

// addDelay adds to each latency a sample of the lognormal with median p50
// and 99th percentile p99 (nothing when p50 is zero).
func addDelay(lat []time.Duration, p50, p99 time.Duration, rng *rand.Rand) {
	if p50 <= 0 {
		return
	}
	sigma := 0.0
	if p99 > p50 {
		sigma = math.Log(float64(p99)/float64(p50)) / z99
	}
	for i := range lat {
		lat[i] += time.Duration(float64(p50) * math.Exp(sigma*rng.NormFloat64()))
	}
}

// service holds, per batch size, the lognormal service-time distribution.
type service struct {
	p50   []float64 // nanoseconds
	sigma []float64
	mean  []time.Duration
	// dispP50 and dispSigma: the lognormal dispatch delay (see
	// Profile.Dispatch), nanoseconds.
	dispP50, dispSigma float64
}

func newService(p *Profile, maxBatch int) *service {
	sv := &service{p50: make([]float64, maxBatch+1), sigma: make([]float64, maxBatch+1), mean: make([]time.Duration, maxBatch+1)}
	if d := p.Dispatch; d.P50 > 0 {
		sv.dispP50 = float64(d.P50)
		if d.P99 > d.P50 {
			sv.dispSigma = math.Log(float64(d.P99)/float64(d.P50)) / z99
		}
	}
	for n := 1; n <= maxBatch; n++ {
		p50, p99 := p.Latency(n)
		sv.p50[n] = float64(p50)
		if p99 > p50 {
			sv.sigma[n] = math.Log(float64(p99)/float64(p50)) / z99
		}
		sv.mean[n] = time.Duration(sv.p50[n] * math.Exp(sv.sigma[n]*sv.sigma[n]/2))
	}
	return sv
}

// dispatch draws how late a batch starts after it is due (0 without a
// measured dispatch delay).
func (sv *service) dispatch(rng *rand.Rand) time.Duration {
	if sv.dispP50 == 0 {
		return 0
	}
	return time.Duration(sv.dispP50 * math.Exp(sv.dispSigma*rng.NormFloat64()))
}

// sample draws the execution time of a batch of n.
func (sv *service) sample(n int, rng *rand.Rand) time.Duration {
	if sv.sigma[n] == 0 {
		return time.Duration(sv.p50[n])
	}
	return time.Duration(sv.p50[n] * math.Exp(sv.sigma[n]*rng.NormFloat64()))
}

type simOut struct {
	busy    time.Duration
	batches int
	last    time.Duration // last completion
}

// simulateOnline simulates the scheduler: one worker per instance, FIFO
// queue, batches formed by the policy. lat receives each request's latency.
func simulateOnline(p *Profile, arr []time.Duration, s Settings, slo time.Duration, rng *rand.Rand, lat []time.Duration, size []int32) simOut {
	var out simOut
	mbs := s.MaxBatchSize
	sv := newService(p, mbs)
	n := len(arr)
	// Requests arr[qh:ai] are queued; completion times of busy instances
	// are in the heap.
	ai, qh := 0, 0
	busy := make(durHeap, 0, s.Instances)
	idle := s.Instances
	nextTick := s.BatchTimeout // ticks run from the start, offset 0

	// ready applies the policy to the queue at now: whether a batch fires,
	// and if not, when it would without further arrivals (never: only an
	// arrival can make it ready).
	ready := func(now time.Duration) (bool, time.Duration) {
		q := ai - qh
		head := arr[qh]
		fireBy := never
		if slo > 0 {
			// Deadline pressure; the oldest request has the tightest
			// deadline.
			est := sv.mean[min(q, mbs)]
			fireBy = head + slo - est - est/4 - time.Millisecond
			if now >= fireBy {
				return true, never
			}
		}
		switch s.Policy {
		case PolicySingle:
			return true, never
		case PolicySize:
			if q >= mbs {
				return true, never
			}
			return false, fireBy
		case PolicyTime:
			if nextTick <= head {
				nextTick += ((head-nextTick)/s.BatchTimeout + 1) * s.BatchTimeout
			}
			if now >= nextTick {
				return true, never
			}
			return false, min(fireBy, nextTick)
		default: // hybrid
			if q >= mbs {
				return true, never
			}
			due := head + s.MaxQueueDelay
			if now >= due {
				return true, never
			}
			return false, min(fireBy, due)
		}
	}

	wake := never
	for {
		now := never
		if ai < n {
			now = arr[ai]
		}
		if len(busy) > 0 && busy[0] < now {
			now = busy[0]
		}
		if idle > 0 && qh < ai && wake < now {
			now = wake
		}
		if now == never {
			break
		}
		// Batches formed now fire on a timer (the server measures their
		// dispatch delay) unless an arrival or a freed instance came
		// first.
		timerFired := wake != never && now == wake && (ai >= n || arr[ai] > now) && (len(busy) == 0 || busy[0] > now)
		for len(busy) > 0 && busy[0] <= now {
			busy.pop()
			idle++
		}
		for ai < n && arr[ai] <= now {
			ai++
		}
		wake = never
		for idle > 0 && qh < ai {
			// After the last arrival the server closes: as
			// Scheduler.Close does, it flushes the queue regardless of
			// policy, so that the end of a finite workload does not
			// hold a partial batch until its deadline.
			ok, at := ready(now)
			if !ok && ai < n {
				wake = at
				break
			}
			k := min(ai-qh, mbs)
			if s.Policy == PolicyTime && now >= nextTick {
				nextTick += ((now-nextTick)/s.BatchTimeout + 1) * s.BatchTimeout
			}
			d := sv.sample(k, rng)
			// A timer-fired batch starts after the measured dispatch
			// delay; the instance is taken meanwhile but not busy.
			done := now + d
			if timerFired {
				done += sv.dispatch(rng)
			}
			for i := qh; i < qh+k; i++ {
				lat[i], size[i] = done-arr[i], int32(k)
			}
			qh += k
			out.busy += d
			out.batches++
			out.last = max(out.last, done)
			idle--
			busy.push(done)
		}
	}
	return out
}

// simulateBatch simulates batch mode: the requests of each window run as
// one job at its end, in batches of MaxBatchSize, each batch on the
// instance that frees up first.
func simulateBatch(p *Profile, arr []time.Duration, s Settings, rng *rand.Rand, lat []time.Duration, size []int32) simOut {
	var out simOut
	b := s.MaxBatchSize
	sv := newService(p, b)
	free := make([]time.Duration, s.Instances)
	n := len(arr)
	for i := 0; i < n; {
		end, j := arr[n-1], n
		if w := s.Window; w > 0 {
			end = (arr[i]/w + 1) * w
			j = i + sortSearch(arr[i:], end)
		}
		for from := i; from < j; from += b {
			k := min(b, j-from)
			x := 0
			for y := range free {
				if free[y] < free[x] {
					x = y
				}
			}
			d := sv.sample(k, rng)
			done := max(free[x], end) + d
			free[x] = done
			for r := from; r < from+k; r++ {
				lat[r], size[r] = done-arr[r], int32(k)
			}
			out.busy += d
			out.batches++
			out.last = max(out.last, done)
		}
		i = j
	}
	return out
}

// sortSearch returns the index of the first arrival at or after t.
func sortSearch(arr []time.Duration, t time.Duration) int {
	i, _ := slices.BinarySearch(arr, t)
	return i
}

// durHeap is a min-heap of times, without the interface boxing of
// container/heap.
type durHeap []time.Duration

func (h *durHeap) push(d time.Duration) {
	*h = append(*h, d)
	a := *h
	for i := len(a) - 1; i > 0; {
		parent := (i - 1) / 2
		if a[parent] <= a[i] {
			break
		}
		a[parent], a[i] = a[i], a[parent]
		i = parent
	}
}

func (h *durHeap) pop() time.Duration {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	for i := 0; ; {
		l, small := 2*i+1, i
		if l < len(a) && a[l] < a[small] {
			small = l
		}
		if r := l + 1; r < len(a) && a[r] < a[small] {
			small = r
		}
		if small == i {
			break
		}
		a[i], a[small] = a[small], a[i]
		i = small
	}
	*h = a
	return top
}
