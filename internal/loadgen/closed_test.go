package loadgen

import (
	"context"
	"testing"
	"time"
)

func TestRunClosedLoop(t *testing.T) { forEachTransport(t, testRunClosedLoop) }

func testRunClosedLoop(t *testing.T, tr string) {
	f := newFakeServer(t)
	f.latency.Store(int64(5 * time.Millisecond))
	cfg := baseConfig(f, tr, 0, 500*time.Millisecond)
	cfg.Concurrency = 3
	cfg.Warmup = 100 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.checkClean(t)
	if res.OK == 0 || res.OK != res.Sent || res.Dropped != 0 || res.Errors != 0 {
		t.Fatalf("want only OK responses, got %+v", res)
	}
	// Three workers each wait for their answer: never more than three
	// connections, and far fewer requests than an open loop would send.
	if _, peak, _ := f.connStats(); peak > 3 {
		t.Errorf("peak connections %d, want <= 3", peak)
	}
	if res.ThroughputRPS <= 0 || res.ThroughputRPS > 3/0.005*1.2 {
		t.Errorf("throughput %.0f/s, want within the 3 workers' bound of %.0f/s", res.ThroughputRPS, 3/0.005)
	}
	f.checkConnsClosed(t)
}

func TestConcurrencyValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"closed loop needs no rate", Config{URL: "http://127.0.0.1:1", Model: "m", Duration: time.Second, Concurrency: 2}, true},
		{"negative concurrency", Config{URL: "http://127.0.0.1:1", Model: "m", Rate: 1, Duration: time.Second, Concurrency: -1}, false},
		{"open loop needs a rate", Config{URL: "http://127.0.0.1:1", Model: "m", Duration: time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			if (err == nil) != tc.ok {
				t.Fatalf("withDefaults: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
