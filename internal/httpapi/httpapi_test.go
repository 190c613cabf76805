package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"

	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/kserve"
	"github.com/infergate/infergate/internal/loadgen"
)

// client bounds every test request, so that a bug fails a test instead of
// hanging it.
var client = &http.Client{Timeout: 20 * time.Second}

// newServer starts the API over an engine serving the fake model "sum"
// (input [N,4] FP32, output [N,1] row sums).
func newServer(t *testing.T, classes map[string]batching.Policy, sess func() *fake.Session) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	if sess == nil {
		sess = func() *fake.Session { return &fake.Session{} }
	}
	eng := engine.New(engine.Options{Runtime: fake.Runtime{New: sess}, Registerer: reg, Ledger: cost.New(nil, 1)})
	if err := eng.Load(t.Context(), config.Model{Name: "sum", Path: "unused", Instances: 1, MaxBatchSize: 8, Classes: classes, WarmupRuns: 1}); err != nil {
		t.Fatal(err)
	}
	eng.SetReady(true)
	srv := httptest.NewServer(httpapi.New(eng, reg, httpapi.Options{MaxBodyBytes: 1 << 16}, nil))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = eng.Close(ctx)
	})
	return srv
}

func post(t *testing.T, url string, body []byte, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	return doRequest(t, http.MethodPost, url, bytes.NewReader(body), hdr)
}

// doRequest sends one request with the test client and returns the
// response (body closed) and its body.
func doRequest(t *testing.T, method, url string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestInferJSON(t *testing.T) {
	srv := newServer(t, nil, nil)
	body := `{"id":"r1","inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[0.5,0.5,0.5,0.5]]}]}`
	resp, b := post(t, srv.URL+"/v2/models/sum/infer", []byte(body), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var out struct {
		ModelName string `json:"model_name"`
		ID        string `json:"id"`
		Outputs   []struct {
			Name     string    `json:"name"`
			Shape    []int64   `json:"shape"`
			Datatype string    `json:"datatype"`
			Data     []float64 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if out.ModelName != "sum" || out.ID != "r1" || len(out.Outputs) != 1 {
		t.Fatalf("response %s", b)
	}
	o := out.Outputs[0]
	if o.Name != "sum" || o.Datatype != "FP32" || len(o.Shape) != 2 || o.Shape[0] != 2 || o.Data[0] != 10 || o.Data[1] != 2 {
		t.Fatalf("output %+v", o)
	}
	// The server's own time covers the queue and the compute it reports.
	server, err1 := strconv.ParseFloat(resp.Header.Get(httpapi.ServerTimeHeader), 64)
	queue, err2 := strconv.ParseFloat(resp.Header.Get("X-Infergate-Queue-Ms"), 64)
	compute, err3 := strconv.ParseFloat(resp.Header.Get("X-Infergate-Compute-Ms"), 64)
	if err := errors.Join(err1, err2, err3); err != nil || server <= 0 || server < queue+compute-0.002 {
		t.Errorf("server %v ms, queue %v, compute %v: %v", server, queue, compute, err)
	}
}

func TestInferBinary(t *testing.T) {
	srv := newServer(t, nil, nil)
	hdr := []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],"outputs":[{"name":"sum","parameters":{"binary_data":true}}]}`)
	body := append([]byte(nil), hdr...)
	for _, v := range []float32{1, 2, 3, 4.5} {
		body = binary.LittleEndian.AppendUint32(body, math.Float32bits(v))
	}
	resp, b := post(t, srv.URL+"/v2/models/sum/infer", body, map[string]string{
		httpapi.HeaderLength: strconv.Itoa(len(hdr)), "Content-Type": "application/octet-stream"})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	hl, err := strconv.Atoi(resp.Header.Get(httpapi.HeaderLength))
	if err != nil {
		t.Fatalf("no %s header", httpapi.HeaderLength)
	}
	out, err := kserve.DecodeInferResponse(b, hl)
	if err != nil {
		t.Fatal(err)
	}
	got := fake.Floats(out.Outputs[0])
	if len(got) != 1 || got[0] != 10.5 {
		t.Fatalf("got %v, want [10.5]", got)
	}
}

func TestBadRequests(t *testing.T) {
	srv := newServer(t, nil, nil)
	tests := []struct {
		name   string
		path   string
		body   string
		hdr    map[string]string
		status int
		msg    string
	}{
		{"malformed JSON", "/v2/models/sum/infer", `{"inputs":[`, nil, 400, ""},
		{"unknown model", "/v2/models/nope/infer", `{}`, nil, 404, "nope"},
		{"unknown version", "/v2/models/sum/versions/7/infer", `{}`, nil, 404, "version"},
		{"wrong shape", "/v2/models/sum/infer", `{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}`, nil, 400, "shape"},
		{"wrong datatype", "/v2/models/sum/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}`, nil, 400, "datatype"},
		{"element count", "/v2/models/sum/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}`, nil, 400, ""},
		{"unknown input", "/v2/models/sum/infer", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, nil, 400, "x"},
		{"batch too large", "/v2/models/sum/infer", `{"inputs":[{"name":"input","shape":[9,4],"datatype":"FP32","data":[` + strings.Repeat("1,", 35) + `1]}]}`, nil, 400, ""},
		{"unknown output", "/v2/models/sum/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}`, nil, 400, "nope"},
		{"bad class", "/v2/models/sum/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, map[string]string{httpapi.ClassHeader: "vip"}, 400, "class"},
		{"bad priority", "/v2/models/sum/infer", `{"parameters":{"priority":-1},"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, nil, 400, "priority"},
		{"timeout overflow", "/v2/models/sum/infer", `{"parameters":{"timeout":18446744073709552},"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, nil, 400, "timeout"},
		{"header length past body", "/v2/models/sum/infer", `{}`, map[string]string{httpapi.HeaderLength: "999"}, 400, ""},
		{"body too large", "/v2/models/sum/infer", strings.Repeat(" ", 1<<17), nil, 413, ""},
		{"no route", "/v3/whatever", `{}`, nil, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(t, srv.URL+tt.path, []byte(tt.body), tt.hdr)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			var e struct{ Error, Code string }
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
				t.Fatalf("body is not a JSON error: %q", b)
			}
			if !strings.Contains(e.Error, tt.msg) {
				t.Fatalf("error %q does not mention %q", e.Error, tt.msg)
			}
		})
	}
}

func TestOverloadAnswers429WithRetryAfter(t *testing.T) {
	hang := make(chan struct{})
	classes := map[string]batching.Policy{"normal": {Kind: batching.Single, MaxQueueSize: 1}}
	sess := &fake.Session{Hang: hang}
	eng := engine.New(engine.Options{Runtime: fake.Runtime{New: func() *fake.Session { return sess }}})
	if err := eng.Load(t.Context(), config.Model{Name: "sum", Path: "x", Instances: 1, MaxBatchSize: 8, Classes: classes, WarmupRuns: -1}); err != nil {
		t.Fatal(err)
	}
	eng.SetReady(true)
	hs := httptest.NewServer(httpapi.New(eng, prometheus.NewRegistry(), httpapi.Options{}, nil))
	defer hs.Close()
	body := []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	send := func() {
		go func() {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, hs.URL+"/v2/models/sum/infer", bytes.NewReader(body))
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	m, _ := eng.Model("sum")
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// One request runs (and hangs), one queues, the third is rejected.
	send()
	waitFor("first running", func() bool { return len(sess.Batches()) == 1 })
	send()
	waitFor("second queued", func() bool { return m.Sched.QueueLen(infergate.ClassNormal) == 1 })
	resp, b := post(t, hs.URL+"/v2/models/sum/infer", body, nil)
	close(hang)
	if err := eng.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
}

func TestHealthMetadataCostMetrics(t *testing.T) {
	srv := newServer(t, nil, nil)
	post(t, srv.URL+"/v2/models/sum/infer", []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`), nil)
	for _, tc := range []struct {
		path string
		want string
	}{
		{"/v2/health/live", `"live":true`},
		{"/v2/health/ready", `"ready":true`},
		{"/v2/models/sum", `"datatype":"FP32"`},
		{"/v2/models/sum/ready", `"ready":true`},
		{"/v1/cost", `"utilization"`},
		{"/v1/models/sum/profile", `"batch_size":1`},
		{"/metrics", `infergate_requests_total{class="normal",model="sum",outcome="ok"} 1`},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: status %d, body lacks %q:\n%.600s", tc.path, resp.StatusCode, tc.want, b)
		}
	}
}

func TestMalformedChunkedBodyIs400(t *testing.T) {
	srv := newServer(t, nil, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	// A chunk size that is not hexadecimal.
	req := "POST /v2/models/sum/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"error"`) {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
}

func TestServerTimeHeaderMatchesTheLoadGenerator(t *testing.T) {
	if httpapi.ServerTimeHeader != loadgen.ServerTimeHeader {
		t.Errorf("server sends %q, the load generator reads %q", httpapi.ServerTimeHeader, loadgen.ServerTimeHeader)
	}
}
