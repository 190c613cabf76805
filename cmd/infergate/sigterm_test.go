package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/kserve"
)

// TestSIGTERMUnderLoad: clients keep the real server busy; SIGTERM arrives.
// Every request the server accepted (it answered with a status) succeeds:
// in-flight requests drain within the drain timeout; what comes after the
// listener closed is refused at the connection, never answered with an
// error. The process exits 0.
func TestSIGTERMUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	s := startE2EServer(t)
	// A header block past the limit is refused before any handler runs.
	if resp, _ := s.do("GET", "/v2/models/mlp", nil, map[string]string{"X-Pad": strings.Repeat("a", 100<<10)}); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KiB header: status %d, want 431", resp.StatusCode)
	}
	req := kserve.InferRequest{Inputs: []infergate.Tensor{fp32Tensor("input", testRow(1))}}
	body, hl := kserve.AppendInferRequest(nil, &req, true)
	var ok, failed, refused atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				hr, err := http.NewRequest("POST", s.base+"/v2/models/mlp/infer", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				hr.Header.Set("Content-Type", "application/octet-stream")
				hr.Header.Set(kserve.HeaderContentLength, strconv.Itoa(hl))
				resp, err := client.Do(hr)
				if err != nil {
					// Not accepted: the listener is closed or the
					// idle connection was shut.
					refused.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case rerr == nil && resp.StatusCode == http.StatusOK:
					ok.Add(1)
				case errors.Is(rerr, io.ErrUnexpectedEOF) || rerr != nil:
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, "body cut: "+rerr.Error())
				default:
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, strconv.Itoa(resp.StatusCode)+" "+string(b))
				}
			}
		}()
	}
	// Let the load establish, then terminate.
	for ok.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
	}
	before := ok.Load()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("server still running 30 s after SIGTERM")
	}
	close(stop)
	wg.Wait()
	if s.waitErr != nil {
		t.Fatalf("exit after SIGTERM: %v", s.waitErr)
	}
	t.Logf("%d requests served before SIGTERM, %d in all; %d failed; %d refused at the connection after the listener closed", before, ok.Load(), failed.Load(), refused.Load())
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d accepted requests failed during the drain; first: %v", n, firstFailure.Load())
	}
}
