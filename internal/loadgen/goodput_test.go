package loadgen

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The fake serves 4 requests at a time, 20ms each: capacity 200 req/s.
// Below it latency stays near 20ms; beyond it the queue grows without bound.
func newCapacityServer(t *testing.T) *fakeServer {
	f := newFakeServer(t)
	f.slots = make(chan struct{}, 4)
	f.latency.Store(int64(20 * time.Millisecond))
	return f
}

func TestGoodput(t *testing.T) { forEachTransport(t, testGoodput) }

func testGoodput(t *testing.T, tr string) {
	f := newCapacityServer(t)
	cfg := baseConfig(f, tr, 0, 300*time.Millisecond)
	cfg.Warmup = 50 * time.Millisecond
	t0 := time.Now()
	best, tried, err := Goodput(context.Background(), cfg, 50, 1600, 80*time.Millisecond, 6)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range tried {
		t.Logf("rate %6.1f  p99 %6.1fms  failures %.3f  pass %v", r.Rate, ms(r.P99), r.FailureFraction(), MeetsSLO(r, 80*time.Millisecond))
	}
	t.Logf("best %.1f req/s after %d steps in %v", best.Rate, len(tried), time.Since(t0))
	if len(tried) > 6 || len(tried) < 3 {
		t.Errorf("%d steps, want 3..6", len(tried))
	}
	if best.Rate < 70 || best.Rate > 260 {
		t.Errorf("goodput %.1f req/s, want within 70..260 (capacity 200)", best.Rate)
	}
	if !MeetsSLO(best, 80*time.Millisecond) {
		t.Errorf("best result does not meet the SLO: %+v", best)
	}
	for _, r := range tried {
		if r.Rate > best.Rate && MeetsSLO(r, 80*time.Millisecond) {
			t.Errorf("step at %.1f passed but best is %.1f", r.Rate, best.Rate)
		}
	}
	// The step SLO defaults to the goodput SLO.
	if got := best.ByClass[0x1].SLO; got != 80*time.Millisecond {
		t.Errorf("step SLO %v, want 80ms", got)
	}
}

func TestGoodputNonePass(t *testing.T) { forEachTransport(t, testGoodputNonePass) }

func testGoodputNonePass(t *testing.T, tr string) {
	f := newFakeServer(t)
	f.rejectEvery.Store(2)
	cfg := baseConfig(f, tr, 0, 200*time.Millisecond)
	best, tried, err := Goodput(context.Background(), cfg, 50, 400, 100*time.Millisecond, 4)
	// Failures before any pass are scanned past (50, 100, 200, 400), since
	// some policies only pass at higher rates.
	if !errors.Is(err, ErrNoGoodput) || best != nil || len(tried) != 4 {
		t.Errorf("got best %v, %d steps, err %v; want ErrNoGoodput after scanning 4 rates", best, len(tried), err)
	}
	if _, _, err := Goodput(context.Background(), cfg, 0, 10, time.Second, 1); err == nil {
		t.Error("lo = 0: want an error")
	}
}

func TestGoodputAllPass(t *testing.T) { forEachTransport(t, testGoodputAllPass) }

func testGoodputAllPass(t *testing.T, tr string) {
	f := newFakeServer(t)
	cfg := baseConfig(f, tr, 0, 200*time.Millisecond)
	best, tried, err := Goodput(context.Background(), cfg, 50, 150, 100*time.Millisecond, 5)
	if err != nil {
		t.Fatal(err)
	}
	// 50, 100, 150 (capped at hi), then stop.
	if len(tried) != 3 || best.Rate != 150 {
		t.Errorf("best %.1f after %d steps, want 150 after 3", best.Rate, len(tried))
	}
}

// Offered 300 req/s against a capacity of 100 req/s, the reported
// throughput is what the server delivered in the window, not the offer.
func TestRunThroughputUnderOverload(t *testing.T) {
	forEachTransport(t, testRunThroughputUnderOverload)
}

func testRunThroughputUnderOverload(t *testing.T, tr string) {
	f := newFakeServer(t)
	f.slots = make(chan struct{}, 2)
	f.latency.Store(int64(20 * time.Millisecond))
	res, err := Run(context.Background(), baseConfig(f, tr, 300, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if res.ThroughputRPS < 50 || res.ThroughputRPS > 140 {
		t.Errorf("throughput %.1f req/s, want about 100 (capacity)", res.ThroughputRPS)
	}
	if res.OK != res.Sent || res.P99 < 100*time.Millisecond {
		t.Errorf("want all served eventually, with queueing delay: %+v", res)
	}
}
