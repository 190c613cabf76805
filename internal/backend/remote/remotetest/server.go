// Package remotetest is an in-process KServe v2 REST server for tests of
// the remote backend: one model with one FP32 input "input" [N,Dim] and
// two FP32 outputs, "sum" [N,1] (each row's sum) and "neg" [N,Dim] (the
// input negated), answered in the order neg, sum. It records every infer
// call (batch size, encoding, status) and takes injected faults: error
// statuses, dropped connections, hangs, latency, malformed answers, and a
// refusal of binary tensor data.
package remotetest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/kserve"
)

// ModelName is the name the server serves its model under.
const ModelName = "sum"

// Fault is what the server does with one infer call instead of answering
// it. The zero Fault answers normally.
type Fault struct {
	// Status answers with this HTTP status and a v2 error body carrying
	// Message.
	Status  int
	Message string
	// RetryAfter is sent as the Retry-After header with Status.
	RetryAfter string
	// Reset drops the connection without an answer.
	Reset bool
	// Hang never answers; the handler returns when the client gives up
	// or the server closes.
	Hang bool
	// ExtraRow answers with one output row more than the batch.
	ExtraRow bool
	// Body answers 200 with this body as it is (JSON).
	Body string
}

// Call records one infer call.
type Call struct {
	// Batch is the first dimension of the input, -1 if the request could
	// not be decoded.
	Batch int
	// Binary reports whether the request carried binary tensor data.
	Binary bool
	// Status is the HTTP status answered, 0 for a dropped connection or a
	// hang.
	Status int
}

// Server is the fake upstream. Its methods are safe for concurrent use.
type Server struct {
	*httptest.Server
	dim int

	mu           sync.Mutex
	faults       []Fault
	calls        []Call
	metaCalls    int
	latency      time.Duration
	rejectBinary bool
	stop         chan struct{}
	stopOnce     sync.Once
}

// NewServer starts a server whose input rows have dim elements. Close it
// when done.
func NewServer(dim int) *Server {
	s := &Server{dim: dim, stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/models/{name}", s.metadata)
	mux.HandleFunc("GET /v2/models/{name}/versions/{version}", s.metadata)
	mux.HandleFunc("POST /v2/models/{name}/infer", s.infer)
	mux.HandleFunc("POST /v2/models/{name}/versions/{version}/infer", s.infer)
	s.Server = httptest.NewServer(mux)
	return s
}

// Close releases hanging calls and shuts the server down.
func (s *Server) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.Server.Close()
}

// ModelURL is the model's URL, the path to configure.
func (s *Server) ModelURL() string { return s.URL + "/v2/models/" + ModelName }

// Fail queues faults for the next infer calls, one each, in order.
func (s *Server) Fail(faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, faults...)
}

// SetLatency makes every infer call take at least d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetRejectBinary makes the server answer 400 to requests with binary
// tensor data, as a server without the extension would.
func (s *Server) SetRejectBinary(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectBinary = v
}

// Calls returns the infer calls so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Batches returns the batch sizes of the infer calls answered 200.
func (s *Server) Batches() []int {
	var out []int
	for _, c := range s.Calls() {
		if c.Status == http.StatusOK {
			out = append(out, c.Batch)
		}
	}
	return out
}

// MetadataCalls returns the number of metadata requests so far.
func (s *Server) MetadataCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metaCalls
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.metaCalls++
	s.mu.Unlock()
	if r.PathValue("name") != ModelName {
		writeError(w, http.StatusNotFound, "unknown model")
		return
	}
	d := int64(s.dim)
	writeJSON(w, map[string]any{
		"name": ModelName, "versions": []string{"1"}, "platform": "fake",
		"inputs": []infergate.TensorSpec{{Name: "input", DataType: infergate.FP32, Shape: []int64{-1, d}}},
		"outputs": []infergate.TensorSpec{
			{Name: "sum", DataType: infergate.FP32, Shape: []int64{-1, 1}},
			{Name: "neg", DataType: infergate.FP32, Shape: []int64{-1, d}},
		},
	})
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	call := Call{Batch: -1}
	s.mu.Lock()
	var f Fault
	if len(s.faults) > 0 {
		f = s.faults[0]
		s.faults = s.faults[1:]
	}
	latency, rejectBinary := s.latency, s.rejectBinary
	// The call is recorded at once and updated as it goes, so that a
	// client that gave up on a hanging call finds it counted.
	idx := len(s.calls)
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	update := func() {
		s.mu.Lock()
		s.calls[idx] = call
		s.mu.Unlock()
	}
	defer update()

	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	hl := -1
	if h := r.Header.Get(kserve.HeaderContentLength); h != "" {
		call.Binary = true
		if hl, err = strconv.Atoi(h); err != nil {
			call.Status = writeError(w, http.StatusBadRequest, "bad header length")
			return
		}
	}
	if call.Binary && rejectBinary {
		call.Status = writeError(w, http.StatusBadRequest, "binary tensor data is not supported")
		return
	}
	req, err := kserve.DecodeInferRequest(body, hl, kserve.Limits{})
	if err != nil {
		call.Status = writeError(w, http.StatusBadRequest, infergate.ErrorMessage(err))
		return
	}
	in := req.Inputs[0]
	if len(req.Inputs) != 1 || in.Name != "input" || in.DataType != infergate.FP32 || len(in.Shape) != 2 || in.Shape[1] != int64(s.dim) {
		call.Status = writeError(w, http.StatusBadRequest, "want one FP32 input \"input\" [N,"+strconv.Itoa(s.dim)+"]")
		return
	}
	n := int(in.Shape[0])
	call.Batch = n
	update()
	if latency > 0 && !s.sleep(r.Context(), latency) {
		return
	}
	switch {
	case f.Status != 0:
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		call.Status = writeError(w, f.Status, f.Message)
		return
	case f.Reset:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
		return
	case f.Hang:
		select {
		case <-r.Context().Done():
		case <-s.stop:
		}
		return
	case f.Body != "":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, f.Body)
		call.Status = http.StatusOK
		return
	}
	rows := n
	if f.ExtraRow {
		rows++
	}
	sum := make([]byte, 0, 4*rows)
	neg := make([]byte, 0, 4*rows*s.dim)
	for i := range rows {
		var t float32
		for j := range s.dim {
			v := float32(0)
			if i < n {
				v = math.Float32frombits(binary.LittleEndian.Uint32(in.Data[4*(i*s.dim+j):]))
			}
			t += v
			neg = binary.LittleEndian.AppendUint32(neg, math.Float32bits(-v))
		}
		sum = binary.LittleEndian.AppendUint32(sum, math.Float32bits(t))
	}
	resp := kserve.InferResponse{ModelName: ModelName, ModelVersion: "1", ID: req.ID, Outputs: []infergate.Tensor{
		{Name: "neg", DataType: infergate.FP32, Shape: []int64{int64(rows), int64(s.dim)}, Data: neg},
		{Name: "sum", DataType: infergate.FP32, Shape: []int64{int64(rows), 1}, Data: sum},
	}}
	out, headerLen := kserve.AppendInferResponse(nil, &resp, req.OutputBinary)
	if headerLen != len(out) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set(kserve.HeaderContentLength, strconv.Itoa(headerLen))
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write(out)
	call.Status = http.StatusOK
}

// sleep waits d unless the call or the server ends first.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.stop:
	}
	return false
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
	return status
}
