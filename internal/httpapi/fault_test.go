package httpapi_test

import (
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/batching"
)

// TestBackendHang: the runtime hangs. Requests fail at their deadline
// (queued ones at it, the ones in the hung batch at twice it), readiness
// goes false with the reason, and once the runtime recovers the server is
// ready again, serves, and has no goroutines left over.
func TestBackendHang(t *testing.T) {
	hang := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hang) }) }
	defer release()
	classes := map[string]batching.Policy{"normal": {Kind: batching.Hybrid, MaxBatchSize: 1, MaxQueueDelay: time.Millisecond, MaxQueueSize: 100}}
	// The runtime hangs once armed (after newServer's warmup): every batch
	// then blocks until release.
	var armed atomic.Bool
	srv := newServer(t, classes, func() *fake.Session {
		return &fake.Session{Err: func([]infergate.Tensor) error {
			if armed.Load() {
				<-hang
			}
			return nil
		}}
	})
	armed.Store(true)
	base := runtime.NumGoroutine()
	body := []byte(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],"parameters":{"timeout":300000}}`)
	const n = 8
	start := time.Now()
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := post(t, srv.URL+"/v2/models/sum/infer", body, nil)
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	took := time.Since(start)
	for i, c := range codes {
		if c != http.StatusGatewayTimeout {
			t.Errorf("request %d: status %d, want 504", i, c)
		}
	}
	t.Logf("%d requests against a hung runtime all answered 504 within %v (timeout 300 ms)", n, took.Round(time.Millisecond))
	// Readiness goes false once the batch has run past the stall limit.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, b := doRequest(t, "GET", srv.URL+"/v2/health/ready", nil, nil)
		if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "has run a batch") {
			t.Logf("readiness: %s", b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness stayed %d %s", resp.StatusCode, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	release()
	for {
		resp, b := doRequest(t, "GET", srv.URL+"/v2/health/ready", nil, nil)
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after recovery: %d %s", resp.StatusCode, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, b := post(t, srv.URL+"/v2/models/sum/infer", body, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("after recovery: %d %s", resp.StatusCode, b)
	}
	// No goroutine is left behind by the abandoned requests (the client's
	// idle connections aside, which the comparison allows for).
	client.CloseIdleConnections()
	for {
		g := runtime.NumGoroutine()
		if g <= base+2 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after recovery, %d before the hang\n%s", g, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
