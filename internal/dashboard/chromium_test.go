package dashboard

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/events"
)

// screenshotEnv names a file to write a PNG screenshot of the page to
// (relative paths are relative to this package's directory).
const screenshotEnv = "INFERGATE_DASHBOARD_SCREENSHOT"

func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestChromium renders the page in headless Chromium against a dashboard
// fed with synthetic load and checks from the DOM that every chart drew
// points. Set INFERGATE_DASHBOARD_SCREENSHOT=file.png to also save a
// screenshot.
func TestChromium(t *testing.T) {
	bin := findChromium()
	if bin == "" {
		t.Skip("headless Chromium not found (chromium, chromium-browser or google-chrome on PATH); on Debian: apt-get install -y chromium")
	}
	reg := prometheus.NewRegistry()
	m := newTestMetrics(t, reg, true)
	evlog := events.New(clock.Real{}, nil, nil, 0)
	d := New(Options{Gatherer: reg, Events: evlog, Interval: 100 * time.Millisecond, Keep: 100, PricePerInstanceHour: 3600,
		SLO: func(_, class string) time.Duration {
			return map[string]time.Duration{"urgent": 20 * time.Millisecond, "normal": 200 * time.Millisecond}[class]
		}})

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wg.Go(func() { feed(ctx, m, evlog) })
	wg.Go(func() { d.Run(ctx) })

	// Wait until the last point has every figure the charts draw.
	waitFor(t, func() bool {
		r := d.response(0, 0)
		if len(r.Points) < 5 || len(r.Models) != 2 {
			return false
		}
		for _, p := range r.Points[len(r.Points)-1].Models {
			for _, v := range []Num{p.OKRate["urgent"], p.P99["urgent"], p.Batch, p.Queue["bulk"], p.Instances, p.Utilization,
				p.CostPer1k["all"], p.Saving} {
				if math.IsNaN(float64(v)) {
					return false
				}
			}
		}
		return true
	})

	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	dom := chromium(t, bin, "--dump-dom", srv.URL+"/")

	if !regexp.MustCompile(`<body[^>]*\bdata-ready="1"`).Match(dom) {
		t.Errorf("body has no data-ready=\"1\"")
	}
	canvases := regexp.MustCompile(`<canvas\b[^>]*>`).FindAll(dom, -1)
	if want := 6 * 2; len(canvases) != want {
		t.Errorf("%d chart canvases, want %d (6 charts x 2 models)", len(canvases), want)
	}
	attr := func(tag []byte, name string) string {
		m := regexp.MustCompile(`\b` + name + `="([^"]*)"`).FindSubmatch(tag)
		if m == nil {
			return ""
		}
		return string(m[1])
	}
	for _, c := range canvases {
		n, err := strconv.Atoi(attr(c, "data-points"))
		if err != nil || n <= 0 {
			t.Errorf("chart %s of model %s: data-points=%q, want > 0", attr(c, "data-chart"), attr(c, "data-model"), attr(c, "data-points"))
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	if path := os.Getenv(screenshotEnv); path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			t.Fatal(err)
		}
		chromium(t, bin, "--screenshot="+abs, "--window-size=1400,1800", srv.URL+"/")
		if _, err := os.Stat(abs); err != nil {
			t.Errorf("no screenshot: %v", err)
		}
		t.Logf("screenshot written to %s", abs)
	}
}

// chromium runs headless Chromium on args and returns its standard output.
func chromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	args = append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--virtual-time-budget=8000", "--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// feed records synthetic traffic for two models until ctx ends: "resnet"
// with the end-to-end latency histogram, "bert" without it (queue and
// compute only), plus a mode switch and a scale-up event each.
func feed(ctx context.Context, m *testMetrics, evlog *events.Log) {
	rng := rand.New(rand.NewPCG(12345, 1))
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	modeOf := map[string]string{"urgent": "realtime", "normal": "hybrid", "bulk": "hybrid"}
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for mi, model := range []string{"resnet", "bert"} {
			scale := float64(mi + 1)
			inst := 2.0
			if n > 40 {
				inst = 3
			}
			if n == 40 {
				evlog.Add(infergate.Event{Kind: "scale_up", Model: model, Trigger: "backlog", From: "2", To: "3", Outcome: "applied",
					Message: model + ": 2 -> 3 instances, bulk backlog"})
			}
			if n == 20 {
				modeOf["bulk"] = "batch"
				evlog.Add(infergate.Event{Kind: "switch_done", Model: model, Class: "bulk", Trigger: "cost", From: "hybrid", To: "batch",
					Outcome: "completed", Message: model + ": bulk moved to batch mode"})
			}
			m.instances.WithLabelValues(model).Set(inst)
			m.latency1.WithLabelValues(model, "1").Set(0.004 * scale)
			phase := float64(n) / 30
			for ci, class := range classes {
				reqs := 1 + rng.IntN(3*(ci+1))
				q := 0.0005 * float64(ci*ci+1) * (1 + rng.Float64()) * (1.5 + math.Sin(phase))
				c := 0.003 * scale * (1 + rng.Float64())
				m.requests.WithLabelValues(model, class, "ok").Add(float64(reqs))
				for range reqs {
					m.queue.WithLabelValues(model, class).Observe(q)
					m.compute.WithLabelValues(model, class).Observe(c)
					if model == "resnet" {
						m.latency.WithLabelValues(model, class).Observe(q + c)
					}
				}
				if rng.IntN(10) == 0 {
					m.requests.WithLabelValues(model, class, "rejected").Inc()
				}
				m.queueLen.WithLabelValues(model, class).Set(float64(rng.IntN(5*(ci+1))) * (1 + math.Sin(phase)))
				m.cost.WithLabelValues(model, class, modeOf[class]).Add(float64(reqs) * c / 4) // USD at $1/s, batches of about 4
				m.inferences.WithLabelValues(model).Add(float64(reqs))
			}
			m.executions.WithLabelValues(model).Add(1 + float64(rng.IntN(2)))
			m.busy.WithLabelValues(model).Add(0.004 * scale * (1 + rng.Float64()))
		}
	}
}
