package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/dashboard"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/kserve"
	"github.com/infergate/infergate/internal/onnx"
)

// dashboardScreenshotEnv names a PNG file that TestDashboardInChromium
// writes a screenshot of the live page to. The run then keeps its load up
// longer, so that the charts show a time series.
const dashboardScreenshotEnv = "INFERGATE_DASHBOARD_SCREENSHOT"

// dashboardConfig serves the reference model with mode switching on the
// normal class and the autoscaler on. One thread per instance keeps the
// test's CPU use modest next to other tests. No bulk-only instances: they
// are opened and warmed up on idle-priority threads, which a host whose
// CPUs other tests keep busy may not run for minutes, so the server would
// not start in time (and the test sends no bulk work).
const dashboardConfig = `addr: 127.0.0.1:0
models:
- name: mlp
  path: %s
  threads: 1
  bulk_instances: -1
  switching:
    normal:
      slo: 50ms
      switch_delay: 3s
      bake_time: 2s
  autoscale:
    min_instances: 1
    max_instances: 3
    scale_up_cooldown: 5s
    scale_down_cooldown: 20s
    slo: 50ms
`

// TestDashboardInChromium runs the real server with mode switching and
// autoscaling configured, drives real requests of the urgent and normal
// classes, forces a mode switch through the admin API, and renders the
// dashboard at / in headless Chromium while the load runs. It checks from
// the DOM that the page got data, that every chart drew points and that the
// events table lists the switch; and from the JSON endpoints that the
// normal class was served and the switch recorded.
//
// With INFERGATE_DASHBOARD_SCREENSHOT=file.png it also saves a screenshot
// (docs/dashboard.png). That run takes about a minute: the load runs for
// 60 dashboard samples, with the switch forced 20 in (the page's time axis
// spans the data it has, at least a minute).
func TestDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary and headless Chromium")
	}
	chrome := lookChromium()
	if chrome == "" {
		t.Skip("headless Chromium not found (chromium, chromium-browser or google-chrome on PATH); on Debian: apt-get install -y chromium")
	}
	shot := os.Getenv(dashboardScreenshotEnv)
	// switchAfter is how many dashboard samples with normal traffic there
	// are before the switch is forced, minPoints how many the page must
	// have before Chromium looks at it.
	switchAfter, minPoints := 0, 4
	if shot != "" {
		var err error
		if shot, err = filepath.Abs(shot); err != nil {
			t.Fatal(err)
		}
		switchAfter, minPoints = 20, 60
	}

	// With models configured the server does not generate the reference
	// model: write it where the config points.
	dataDir := t.TempDir()
	modelPath := filepath.Join(dataDir, "models", "mlp", "model.onnx")
	if err := os.MkdirAll(filepath.Dir(modelPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := onnx.WriteReferenceModel(modelPath); err != nil {
		t.Fatal(err)
	}
	configPath := filepath.Join(t.TempDir(), "infergate.yaml")
	if err := os.WriteFile(configPath, fmt.Appendf(nil, dashboardConfig, modelPath), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startE2EServerArgs(t, dataDir, "--config", configPath)

	body := dashboardInferBody(t, s)
	ld := startDashboardLoad(s, body)
	defer ld.stop()

	// Force the switch as soon as both classes are served, well before the
	// switcher could start one itself (its trigger must hold for 3 s; the
	// load keeps the normal class above its low-load threshold).
	waitUntil(t, 30*time.Second, "first ok answers of both classes", func() bool {
		return ld.ok[infergate.ClassUrgent].Load() > 0 && ld.ok[infergate.ClassNormal].Load() > 0
	})
	var dash dashboard.Response
	waitDashboard(t, s, &dash, switchAfter)
	resp, b := s.do("POST", "/v1/models/mlp/modes/normal", []byte(`{"action":"switch","mode":"realtime"}`),
		map[string]string{"Content-Type": "application/json"})
	forced := resp.StatusCode == http.StatusOK
	switch {
	case forced:
	case resp.StatusCode == http.StatusConflict:
		// The switcher started a switch of its own first (a slow start
		// can leave the load trigger holding long enough): that one is the
		// switch to look for.
		t.Logf("forced switch refused, a switch is already on: %s", b)
	default:
		t.Fatalf("POST /v1/models/mlp/modes/normal: status %d, body %s", resp.StatusCode, b)
	}

	// The switch is in the event log at once; Force records it.
	var evs struct {
		Data []infergate.Event `json:"data"`
	}
	s.getJSON("/v1/events?model=mlp", &evs)
	if !hasSwitchStart(evs.Data, forced) {
		t.Errorf("GET /v1/events: no switch_start of mlp normal (forced by the operator: %v); events %+v", forced, evs.Data)
	}

	waitDashboard(t, s, &dash, minPoints)

	// Chromium looks at the page while the load still runs.
	dom := runChromium(t, chrome, "--dump-dom", s.base+"/")
	if shot != "" {
		runChromium(t, chrome, "--screenshot="+shot, "--window-size=1400,1800", s.base+"/")
		if png, err := os.ReadFile(shot); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
			t.Errorf("screenshot %s: not a PNG file (%v)", shot, err)
		} else {
			t.Logf("screenshot written to %s", shot)
		}
	}
	ld.stop()
	t.Logf("load: ok urgent %d, ok normal %d, failed %d; forced switch: %v", ld.ok[infergate.ClassUrgent].Load(),
		ld.ok[infergate.ClassNormal].Load(), ld.failed.Load(), forced)
	if err := ld.firstErr(); err != nil {
		t.Logf("first failed request: %v", err)
	}

	checkDashboardDOM(t, dom)

	// The JSON the page drew from.
	if n := normalPoints(dash); n == 0 {
		t.Errorf("GET /v1/dashboard: no point with ok_rps > 0 for the normal class of mlp")
	}
	if !hasSwitchStart(dash.Events, false) {
		t.Errorf("GET /v1/dashboard: no switch_start event of mlp normal; events %+v", dash.Events)
	}
}

// checkDashboardDOM checks the page Chromium rendered: data arrived, each
// of the six charts of mlp drew points, and the events table lists the
// start of the normal class's switch.
func checkDashboardDOM(t *testing.T, dom []byte) {
	t.Helper()
	if !regexp.MustCompile(`<body[^>]*\bdata-ready="1"`).Match(dom) {
		t.Errorf(`page: body has no data-ready="1"`)
	}
	canvases := regexp.MustCompile(`<canvas\b[^>]*>`).FindAll(dom, -1)
	if len(canvases) != 6 {
		t.Errorf("page: %d chart canvases, want 6 (one model)", len(canvases))
	}
	for _, c := range canvases {
		n, err := strconv.Atoi(htmlAttr(c, "data-points"))
		if err != nil || n <= 0 {
			t.Errorf("page: chart %q of model %q has data-points=%q, want > 0", htmlAttr(c, "data-chart"), htmlAttr(c, "data-model"),
				htmlAttr(c, "data-points"))
		}
	}
	// A row of the events table: time, model, kind, class, ...
	row := regexp.MustCompile(`<td[^>]*>mlp</td><td[^>]*>switch_start</td><td[^>]*>normal</td>`)
	if !row.Match(dom) {
		t.Errorf("page: the events table has no switch_start row for mlp normal")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}

// htmlAttr returns attribute name of a start tag, "" if absent.
func htmlAttr(tag []byte, name string) string {
	m := regexp.MustCompile(`\b` + regexp.QuoteMeta(name) + `="([^"]*)"`).FindSubmatch(tag)
	if m == nil {
		return ""
	}
	return string(m[1])
}

// hasSwitchStart reports whether evs has the start of a switch of mlp's
// normal class, by the operator to realtime if operator is set.
func hasSwitchStart(evs []infergate.Event, operator bool) bool {
	for _, e := range evs {
		if e.Kind == "switch_start" && e.Model == "mlp" && e.Class == "normal" &&
			(!operator || e.Trigger == "operator" && e.To == string(infergate.ModeRealtime)) {
			return true
		}
	}
	return false
}

// normalPoints counts the points of mlp with ok normal traffic.
func normalPoints(r dashboard.Response) int {
	n := 0
	for _, p := range r.Points {
		if mp := p.Models["mlp"]; mp != nil && mp.OKRate["normal"] > 0 {
			n++
		}
	}
	return n
}

// figuresComplete reports whether the latest point of mlp has a value for
// the main series of each chart.
func figuresComplete(r dashboard.Response) bool {
	if len(r.Points) == 0 {
		return false
	}
	mp := r.Points[len(r.Points)-1].Models["mlp"]
	if mp == nil {
		return false
	}
	for _, v := range []dashboard.Num{mp.OKRate["normal"], mp.P99["normal"], mp.Batch, mp.Queue["normal"], mp.Instances,
		mp.Utilization, mp.CostPer1k["all"]} {
		if math.IsNaN(float64(v)) {
			return false
		}
	}
	return true
}

// waitDashboard polls GET /v1/dashboard into dash until it has n points
// with normal traffic and its latest point has every figure the charts
// draw. It returns at once for n = 0.
func waitDashboard(t *testing.T, s *e2eServer, dash *dashboard.Response, n int) {
	t.Helper()
	if n == 0 {
		return
	}
	waitUntil(t, time.Duration(n)*time.Second+45*time.Second, fmt.Sprintf("%d dashboard points with normal traffic", n), func() bool {
		*dash = dashboard.Response{}
		s.getJSON("/v1/dashboard", dash)
		return normalPoints(*dash) >= n && figuresComplete(*dash)
	})
}

// waitUntil polls cond every 100 ms until it holds, failing the test after
// timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dashboardInferBody builds a JSON v2 infer request of one row from the
// model's input spec (GET /v2/models/mlp).
func dashboardInferBody(t *testing.T, s *e2eServer) []byte {
	t.Helper()
	var meta struct {
		Inputs []infergate.TensorSpec `json:"inputs"`
	}
	s.getJSON("/v2/models/mlp", &meta)
	if len(meta.Inputs) != 1 || meta.Inputs[0].DataType != infergate.FP32 {
		t.Fatalf("mlp inputs %+v, want one FP32 input", meta.Inputs)
	}
	in := infergate.Tensor{Name: meta.Inputs[0].Name, DataType: infergate.FP32}
	n := int64(1)
	for _, d := range meta.Inputs[0].Shape {
		d = max(d, 1) // one row of a dynamic batch dimension
		in.Shape = append(in.Shape, d)
		n *= d
	}
	for i := range n {
		in.Data = binary.LittleEndian.AppendUint32(in.Data, math.Float32bits(float32(math.Sin(float64(i)*0.37))))
	}
	body, _ := kserve.AppendInferRequest(nil, &kserve.InferRequest{Inputs: []infergate.Tensor{in}}, false)
	return body
}

// dashboardLoad is paced real traffic: a few goroutines, each sending one
// request at a time, at most one per tick.
type dashboardLoad struct {
	ok     [infergate.NumClasses]atomic.Int64
	failed atomic.Int64
	errMu  sync.Mutex
	err    error // the first failure
	stop   func()
}

// startDashboardLoad starts the load: one urgent and three normal senders,
// each at most 50 requests a second.
func startDashboardLoad(s *e2eServer, body []byte) *dashboardLoad {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ld := &dashboardLoad{}
	ld.stop = sync.OnceFunc(func() {
		cancel()
		wg.Wait()
	})
	for i, c := range []infergate.Class{infergate.ClassUrgent, infergate.ClassNormal, infergate.ClassNormal, infergate.ClassNormal} {
		wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				err := sendInfer(ctx, s, body, c)
				switch {
				case ctx.Err() != nil:
					return
				case err == nil:
					ld.ok[c].Add(1)
				default:
					ld.failed.Add(1)
					ld.errMu.Lock()
					if ld.err == nil {
						ld.err = fmt.Errorf("sender %d (%s): %w", i, c, err)
					}
					ld.errMu.Unlock()
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	return ld
}

func (ld *dashboardLoad) firstErr() error {
	ld.errMu.Lock()
	defer ld.errMu.Unlock()
	return ld.err
}

// sendInfer posts one infer request of class c and wants a 200.
func sendInfer(ctx context.Context, s *e2eServer, body []byte, c infergate.Class) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v2/models/mlp/infer", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(httpapi.ClassHeader, c.String())
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return nil
}

// lookChromium returns the path of a Chromium or Chrome binary on PATH, ""
// if there is none.
func lookChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// runChromium runs headless Chromium with a fresh profile on args and
// returns its standard output.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	args = append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=8000"}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		t.Fatalf("%s %v: %v\n%s", bin, args, err, stderr.Bytes())
	}
	return stdout.Bytes()
}
