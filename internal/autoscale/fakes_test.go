package autoscale

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
)

// fakeModel is a simulated model that is both the Target and the Source:
// each instance serves one unit of load, utilization is load/instances
// capped at 1, and p99 grows steeply once utilization passes 0.9.
type fakeModel struct {
	mu        sync.Mutex
	load      float64 // in instance-equivalents
	instances int
	busy      float64
	setErr    error // returned by SetInstances when set
	setCalls  int
	sampleErr error
	calls     chan int // receives n on every successful SetInstances, when not nil
}

var (
	_ Target = (*fakeModel)(nil)
	_ Source = (*fakeModel)(nil)
)

func (m *fakeModel) util() float64 {
	if m.instances == 0 {
		return 1
	}
	return min(m.load/float64(m.instances), 1)
}

// advance runs the model for dt at the current load.
func (m *fakeModel) advance(dt time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.busy += m.util() * float64(m.instances) * dt.Seconds()
}

func (m *fakeModel) setLoad(l float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.load = l
}

func (m *fakeModel) p99() time.Duration {
	u := m.util()
	if u <= 0.9 {
		return 50 * time.Millisecond
	}
	return 50*time.Millisecond + time.Duration((u-0.9)/0.1*float64(950*time.Millisecond))
}

func (m *fakeModel) Sample(string) (Sample, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sampleErr != nil {
		return Sample{}, m.sampleErr
	}
	return Sample{BusySeconds: m.busy, P99: m.p99()}, nil
}

func (m *fakeModel) Instances(string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.instances
}

func (m *fakeModel) SetInstances(_ context.Context, _ string, n int) error {
	m.mu.Lock()
	m.setCalls++
	if m.setErr != nil {
		err := m.setErr
		m.mu.Unlock()
		return err
	}
	m.instances = n
	calls := m.calls
	m.mu.Unlock()
	if calls != nil {
		calls <- n
	}
	return nil
}

func (m *fakeModel) state() (instances, setCalls int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.instances, m.setCalls
}

// fakeRecorder keeps the events it is given.
type fakeRecorder struct {
	mu     sync.Mutex
	events []infergate.Event
}

var _ Recorder = (*fakeRecorder)(nil)

func (r *fakeRecorder) Add(e infergate.Event) infergate.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.ID = int64(len(r.events) + 1)
	r.events = append(r.events, e)
	return e
}

func (r *fakeRecorder) all() []infergate.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]infergate.Event(nil), r.events...)
}

// waitFor polls cond until it holds, failing after 10s of wall time.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// feed makes controller samples one interval at a time.
type feed struct {
	now  time.Time
	busy float64
}

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func newFeed() *feed { return &feed{now: t0} }

// next advances dt with busyInstances busy instance-equivalents.
func (f *feed) next(dt time.Duration, busyInstances float64, instances int) Sample {
	f.now = f.now.Add(dt)
	f.busy += busyInstances * dt.Seconds()
	return Sample{Time: f.now, Instances: instances, BusySeconds: f.busy}
}

// run feeds secs one-second samples (after a baseline sample when the
// feed is new) and returns every decision.
func (f *feed) run(c *Controller, secs int, busyInstances float64, instances int, mod func(*Sample)) []Decision {
	var ds []Decision
	if f.now.Equal(t0) && f.busy == 0 {
		s := Sample{Time: f.now, Instances: instances}
		if mod != nil {
			mod(&s)
		}
		ds = append(ds, c.Observe(s))
	}
	for range secs {
		s := f.next(time.Second, busyInstances, instances)
		if mod != nil {
			mod(&s)
		}
		ds = append(ds, c.Observe(s))
	}
	return ds
}

func last(ds []Decision) Decision { return ds[len(ds)-1] }

func mustController(tb testing.TB, cfg Config) *Controller {
	tb.Helper()
	c, err := NewController(cfg)
	if err != nil {
		tb.Fatalf("NewController: %v", err)
	}
	return c
}
