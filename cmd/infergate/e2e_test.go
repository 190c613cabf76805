package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/backend/gorun"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/kserve"
	"github.com/infergate/infergate/internal/onnx"
)

// The real binary, built once by buildBinary and removed by TestMain.
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds this package with the go command from PATH, so the
// end-to-end test runs the real main.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			binErr = fmt.Errorf("go command not found: %w", err)
			return
		}
		if binDir, binErr = os.MkdirTemp("", "infergate-e2e-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "infergate")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", binPath, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// stderrWatcher collects the child's stderr and reports the address of the
// "msg=serving addr=..." line once it appears.
type stderrWatcher struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	found bool
	addrc chan string
}

var servingLine = regexp.MustCompile(`(?m)^.*\bmsg=serving addr=(\S+)`)

func (w *stderrWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.found {
		if m := servingLine.FindSubmatch(w.buf.Bytes()); m != nil {
			w.found = true
			w.addrc <- string(m[1])
		}
	}
	return len(p), nil
}

func (w *stderrWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// e2eServer is the server process under test.
type e2eServer struct {
	t       *testing.T
	cmd     *exec.Cmd
	stderr  *stderrWatcher
	exited  chan struct{} // closed once Wait returned
	waitErr error
	base    string
	client  *http.Client
	dataDir string
	// stderrShown is set once a failure message carried the stderr.
	stderrShown bool
}

// startE2EServer runs `infergate serve` on a free port with a fresh data
// folder and waits for its serving line. The process is killed at cleanup
// if it is still running.
func startE2EServer(t *testing.T) *e2eServer {
	t.Helper()
	return startE2EServerArgs(t, t.TempDir())
}

// startE2EServerArgs is startE2EServer on dataDir with extra serve flags.
func startE2EServerArgs(t *testing.T, dataDir string, args ...string) *e2eServer {
	t.Helper()
	bin := buildBinary(t)
	s := &e2eServer{
		t:       t,
		stderr:  &stderrWatcher{addrc: make(chan string, 1)},
		exited:  make(chan struct{}),
		client:  &http.Client{Timeout: 10 * time.Second},
		dataDir: dataDir,
	}
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "info"}, args...)
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout = io.Discard
	s.cmd.Stderr = s.stderr
	s.cmd.WaitDelay = 5 * time.Second
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Kill()
			select {
			case <-s.exited:
			case <-time.After(10 * time.Second):
				t.Errorf("server process %d did not exit after SIGKILL", s.cmd.Process.Pid)
			}
		}
		if t.Failed() && !s.stderrShown {
			t.Logf("server stderr:\n%s", s.stderr.String())
		}
	})
	select {
	case addr := <-s.stderr.addrc:
		s.base = "http://" + addr
	case <-s.exited:
		s.stderrShown = true
		t.Fatalf("server exited before serving (%v); stderr:\n%s", s.waitErr, s.stderr.String())
	case <-time.After(60 * time.Second): // generous: a first start writes a 38 MB model and warms up
		s.stderrShown = true
		t.Fatalf("no serving line within 60s; stderr:\n%s", s.stderr.String())
	}
	return s
}

// do sends a request and returns the response with its whole body.
func (s *e2eServer) do(method, path string, body []byte, header map[string]string) (*http.Response, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

// getJSON GETs path, wants 200 and decodes the JSON body into v.
func (s *e2eServer) getJSON(path string, v any) {
	s.t.Helper()
	resp, b := s.do("GET", path, nil, nil)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET %s: status %d, body %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		s.t.Fatalf("GET %s: %v; body %s", path, err, b)
	}
}

// infer sends a v2 infer request: all JSON, or binary inputs with binary
// outputs requested. It wants 200 and returns the decoded "logits".
func (s *e2eServer) infer(input infergate.Tensor, bin bool) infergate.Tensor {
	s.t.Helper()
	req := kserve.InferRequest{ID: "e2e", Inputs: []infergate.Tensor{input}}
	if bin {
		req.BinaryOutput = true
		req.Outputs = []kserve.RequestedOutput{{Name: "logits", Binary: true}}
	}
	body, hl := kserve.AppendInferRequest(nil, &req, bin)
	header := map[string]string{"Content-Type": "application/json"}
	if hl != len(body) {
		header["Content-Type"] = "application/octet-stream"
		header[kserve.HeaderContentLength] = strconv.Itoa(hl)
	}
	resp, rb := s.do("POST", "/v2/models/mlp/infer", body, header)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("infer (binary %v): status %d, body %s", bin, resp.StatusCode, rb)
	}
	rhl := -1
	if h := resp.Header.Get(kserve.HeaderContentLength); h != "" {
		n, err := strconv.Atoi(h)
		if err != nil {
			s.t.Fatalf("bad %s %q", kserve.HeaderContentLength, h)
		}
		rhl = n
	}
	if bin && (rhl < 0 || rhl >= len(rb)) {
		s.t.Fatalf("binary output requested, but the response has header length %d for a %d-byte body", rhl, len(rb))
	}
	if !bin && rhl >= 0 {
		s.t.Fatalf("JSON request got a binary response (header length %d)", rhl)
	}
	out, err := kserve.DecodeInferResponse(rb, rhl)
	if err != nil {
		s.t.Fatalf("decode response: %v", err)
	}
	if out.ModelName != "mlp" || out.ID != "e2e" {
		s.t.Errorf("response model_name %q id %q, want mlp and e2e", out.ModelName, out.ID)
	}
	if len(out.Outputs) != 1 || out.Outputs[0].Name != "logits" || out.Outputs[0].DataType != infergate.FP32 {
		s.t.Fatalf("response outputs %+v, want one FP32 logits", out.Outputs)
	}
	o := out.Outputs[0]
	if want := input.Shape[0] * 16; len(o.Shape) != 2 || o.Shape[0] != input.Shape[0] || o.Shape[1] != 16 || int64(len(o.Data)) != 4*want {
		s.t.Fatalf("logits shape %v with %d bytes, want [%d 16]", o.Shape, len(o.Data), input.Shape[0])
	}
	return o
}

// wantError POSTs an infer body and wants a JSON v2 error with status and code.
func (s *e2eServer) wantError(name, path string, body []byte, status int, code string) {
	s.t.Helper()
	resp, b := s.do("POST", path, body, map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != status {
		s.t.Errorf("%s: status %d, want %d; body %s", name, resp.StatusCode, status, b)
		return
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		s.t.Errorf("%s: Content-Type %q, want application/json", name, ct)
	}
	var e struct {
		Error *string `json:"error"`
		Code  string  `json:"code"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error == nil || *e.Error == "" {
		s.t.Errorf("%s: body %s is not a JSON error object (%v)", name, b, err)
		return
	}
	if e.Code != code {
		s.t.Errorf("%s: code %q, want %q (error %q)", name, e.Code, code, *e.Error)
	}
}

// testRow is row k of the deterministic test inputs.
func testRow(k int) []float32 {
	row := make([]float32, 768)
	for i := range row {
		row[i] = float32(math.Sin(float64(i)*0.37+float64(k)*1.7)) * (1 + float32(k)/2)
	}
	return row
}

func fp32Tensor(name string, rows ...[]float32) infergate.Tensor {
	t := infergate.Tensor{Name: name, DataType: infergate.FP32, Shape: []int64{int64(len(rows)), int64(len(rows[0]))}}
	for _, r := range rows {
		for _, v := range r {
			t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(v))
		}
	}
	return t
}

func floats(t infergate.Tensor) []float32 {
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out
}

// compare wants got within rel of want, relative to the larger of the
// element's magnitude and a hundredth of the vector's largest one (so that
// logits near zero do not demand impossible precision).
func compare(t *testing.T, what string, got, want []float32, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	scale := 0.0
	for _, w := range want {
		scale = max(scale, math.Abs(float64(w)))
	}
	bad := 0
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) || math.Abs(g-w) > rel*max(math.Abs(w), scale/100) {
			if bad++; bad <= 3 {
				t.Errorf("%s: [%d] = %g, want %g (rel tol %g)", what, i, g, w, rel)
			}
		}
	}
	if bad > 3 {
		t.Errorf("%s: %d values differ in all", what, bad)
	}
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	s := startE2EServer(t)

	for _, p := range []string{"/v2/health/live", "/v2/health/ready"} {
		if resp, b := s.do("GET", p, nil, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d, body %s", p, resp.StatusCode, b)
		}
	}

	var meta struct {
		Name       string                 `json:"name"`
		Versions   []string               `json:"versions"`
		Platform   string                 `json:"platform"`
		Inputs     []infergate.TensorSpec `json:"inputs"`
		Outputs    []infergate.TensorSpec `json:"outputs"`
		Parameters struct {
			Runtime      string `json:"runtime"`
			MaxBatchSize int    `json:"max_batch_size"`
		} `json:"parameters"`
	}
	s.getJSON("/v2/models/mlp", &meta)
	if meta.Name != "mlp" || len(meta.Inputs) != 1 || len(meta.Outputs) != 1 {
		t.Fatalf("metadata %+v", meta)
	}
	if in := meta.Inputs[0]; in.Name != "input" || in.DataType != infergate.FP32 || fmt.Sprint(in.Shape) != "[-1 768]" {
		t.Errorf("metadata input %+v, want input FP32 [-1 768]", in)
	}
	if out := meta.Outputs[0]; out.Name != "logits" || out.DataType != infergate.FP32 || fmt.Sprint(out.Shape) != "[-1 16]" {
		t.Errorf("metadata output %+v, want logits FP32 [-1 16]", out)
	}
	if meta.Parameters.MaxBatchSize < 3 {
		t.Fatalf("max_batch_size %d, want at least 3", meta.Parameters.MaxBatchSize)
	}
	var rel float64
	switch meta.Parameters.Runtime {
	case "onnxruntime":
		rel = 1e-4 // ONNX Runtime against the pure-Go executor
	case "gorun":
		rel = 1e-6
	default:
		t.Fatalf("metadata parameters.runtime %q, want onnxruntime or gorun", meta.Parameters.Runtime)
	}
	if !strings.Contains(s.stderr.String(), "runtime="+meta.Parameters.Runtime) {
		t.Errorf("serving line does not name runtime %s", meta.Parameters.Runtime)
	}
	t.Logf("server runtime: %s", meta.Parameters.Runtime)

	// The reference: the model file the server wrote, run in-process.
	modelPath := filepath.Join(s.dataDir, "models", "mlp", "model.onnx")
	sess, err := gorun.New().Open(modelPath, backend.Options{})
	if err != nil {
		t.Fatalf("open %s in-process: %v", modelPath, err)
	}
	defer sess.Close()
	rows := [][]float32{testRow(0), testRow(1), testRow(2)}
	ctx := context.Background()
	var local, single [][]float32
	for k, r := range rows {
		out, err := sess.Run(ctx, []infergate.Tensor{fp32Tensor("input", r)})
		if err != nil {
			t.Fatalf("in-process run: %v", err)
		}
		local = append(local, floats(out[0]))
		single = append(single, floats(s.infer(fp32Tensor("input", r), false)))
		compare(t, fmt.Sprintf("row %d: server (JSON) vs in-process gorun", k), single[k], local[k], rel)
	}
	sent := len(rows)

	// The same input with binary data both ways.
	bin := floats(s.infer(fp32Tensor("input", rows[0]), true))
	sent++
	compare(t, "row 0: binary vs JSON", bin, single[0], 1e-6)

	// A batch of 3 (binary inputs, JSON outputs) gives the three single rows.
	batchReq := kserve.InferRequest{Inputs: []infergate.Tensor{fp32Tensor("input", rows...)}}
	body, hl := kserve.AppendInferRequest(nil, &batchReq, true)
	resp, rb := s.do("POST", "/v2/models/mlp/infer", body, map[string]string{kserve.HeaderContentLength: strconv.Itoa(hl)})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("batch infer: status %d, body %s", resp.StatusCode, rb)
	}
	sent++
	if resp.Header.Get(kserve.HeaderContentLength) != "" {
		t.Errorf("batch: binary outputs not requested, yet got %s", kserve.HeaderContentLength)
	}
	batchOut, err := kserve.DecodeInferResponse(rb, -1)
	if err != nil {
		t.Fatalf("batch: decode: %v", err)
	}
	if len(batchOut.Outputs) != 1 || fmt.Sprint(batchOut.Outputs[0].Shape) != "[3 16]" {
		t.Fatalf("batch: outputs %+v, want logits [3 16]", batchOut.Outputs)
	}
	bv := floats(batchOut.Outputs[0])
	for k := range rows {
		compare(t, fmt.Sprintf("batch row %d vs single", k), bv[16*k:16*(k+1)], single[k], rel)
	}

	// Bad requests are JSON errors.
	good, _ := kserve.AppendInferRequest(nil, &kserve.InferRequest{Inputs: []infergate.Tensor{fp32Tensor("input", rows[0])}}, false)
	short := make([]float32, 700)
	wrongShape, _ := kserve.AppendInferRequest(nil, &kserve.InferRequest{Inputs: []infergate.Tensor{fp32Tensor("input", short)}}, false)
	fp64 := infergate.Tensor{Name: "input", DataType: infergate.FP64, Shape: []int64{1, 768}, Data: make([]byte, 8*768)}
	wrongType, _ := kserve.AppendInferRequest(nil, &kserve.InferRequest{Inputs: []infergate.Tensor{fp64}}, false)
	s.wantError("malformed JSON", "/v2/models/mlp/infer", []byte(`{"inputs": [{"name": "input",`), http.StatusBadRequest, infergate.EInvalid)
	s.wantError("unknown model", "/v2/models/nosuchmodel/infer", good, http.StatusNotFound, infergate.ENotFound)
	s.wantError("wrong shape", "/v2/models/mlp/infer", wrongShape, http.StatusBadRequest, infergate.EInvalid)
	s.wantError("wrong datatype", "/v2/models/mlp/infer", wrongType, http.StatusBadRequest, infergate.EInvalid)

	resp, mb := s.do("GET", "/metrics", nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(mb, []byte("infergate_requests_total")) {
		t.Errorf("GET /metrics: status %d, infergate_requests_total present: %v", resp.StatusCode, bytes.Contains(mb, []byte("infergate_requests_total")))
	}

	var report cost.Report
	s.getJSON("/v1/cost", &report)
	var normal int64
	for _, l := range report.Lines {
		if l.Model == "mlp" && l.Class == "normal" {
			normal += l.Requests
		}
	}
	if normal < int64(sent) {
		t.Errorf("GET /v1/cost: %d normal requests for mlp, want >= %d; lines %+v", normal, sent, report.Lines)
	}

	// SIGTERM: a clean shutdown with status 0.
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
		if s.waitErr != nil {
			t.Fatalf("after SIGTERM: %v", s.waitErr)
		}
		if code := s.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("exit status %d after SIGTERM", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server still running 30s after SIGTERM")
	}
	if !strings.Contains(s.stderr.String(), "shutting down") {
		t.Errorf("no shutdown log line")
	}
}

func TestRunDispatch(t *testing.T) {
	ctx := context.Background()
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"bogus"}, &out, &errb); err == nil || !strings.Contains(err.Error(), `unknown command "bogus"`) {
		t.Errorf("run bogus: err %v, want unknown command", err)
	}
	if !strings.Contains(errb.String(), "usage:") {
		t.Errorf("run bogus: no usage on stderr: %q", errb.String())
	}

	out.Reset()
	if err := run(ctx, nil, &out, &errb); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("run with no command: err %v, want flag.ErrHelp", err)
	}

	out.Reset()
	if err := run(ctx, []string{"version"}, &out, &errb); err != nil || strings.TrimSpace(out.String()) == "" {
		t.Errorf("run version: err %v, stdout %q", err, out.String())
	}

	if err := run(ctx, []string{"model"}, &out, &errb); err == nil {
		t.Error("run model (no subcommand): no error")
	}

	out.Reset()
	path := filepath.Join(t.TempDir(), "sub", "m.onnx")
	if err := run(ctx, []string{"model", "gen", "--out", path}, &out, &errb); err != nil {
		t.Fatalf("run model gen: %v", err)
	}
	if got := strings.TrimSpace(out.String()); got != path {
		t.Errorf("model gen printed %q, want %q", got, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Decode(b)
	if err != nil {
		t.Fatalf("onnx.Decode of the generated model: %v", err)
	}
	g := m.Graph
	if len(g.Inputs) != 1 || g.Inputs[0].Name != onnx.ReferenceInput || len(g.Outputs) != 1 || g.Outputs[0].Name != onnx.ReferenceOutput {
		t.Errorf("generated model has inputs %+v outputs %+v", g.Inputs, g.Outputs)
	}
}
