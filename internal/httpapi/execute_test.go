package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/kserve"
)

// newEngine returns an engine serving the fake model "sum".
func newEngine(t *testing.T, classes map[string]batching.Policy, sess func() *fake.Session) *engine.Engine {
	t.Helper()
	if sess == nil {
		sess = func() *fake.Session { return &fake.Session{} }
	}
	eng := engine.New(engine.Options{Runtime: fake.Runtime{New: sess}})
	if err := eng.Load(t.Context(), config.Model{Name: "sum", Path: "unused", Instances: 1, MaxBatchSize: 8, Classes: classes, WarmupRuns: -1}); err != nil {
		t.Fatal(err)
	}
	eng.SetReady(true)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = eng.Close(ctx)
	})
	return eng
}

func TestExecute(t *testing.T) {
	x := httpapi.NewExecutor(newEngine(t, nil, nil), kserve.Limits{})
	body := []byte(`{"id":"r1","inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[0.5,0.5,0.5,0.5]]}],"parameters":{"binary_data_output":true}}`)
	orig := bytes.Clone(body)
	status, resp, err := x.Execute(t.Context(), "sum", body)
	if err != nil || status != 200 {
		t.Fatalf("status %d, err %v: %s", status, err, resp)
	}
	if !bytes.Equal(body, orig) {
		t.Fatal("Execute changed the caller's body")
	}
	var out struct {
		ModelName string `json:"model_name"`
		ID        string `json:"id"`
		Outputs   []struct {
			Name  string    `json:"name"`
			Shape []int64   `json:"shape"`
			Data  []float64 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(resp, &out); err != nil {
		t.Fatalf("%v: %s", err, resp)
	}
	if out.ModelName != "sum" || out.ID != "r1" || len(out.Outputs) != 1 || len(out.Outputs[0].Data) != 2 ||
		out.Outputs[0].Data[0] != 10 || out.Outputs[0].Data[1] != 2 {
		t.Fatalf("response %s", resp)
	}
}

func TestExecutePermanentErrors(t *testing.T) {
	x := httpapi.NewExecutor(newEngine(t, nil, nil), kserve.Limits{})
	for _, tc := range []struct {
		name, model, body string
		status            int
		code              string
	}{
		{"bad shape", "sum", `{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}`, 400, infergate.EInvalid},
		{"malformed", "sum", `{"inputs":[`, 400, infergate.EInvalid},
		{"unknown output", "sum", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}`, 400, infergate.EInvalid},
		{"unknown model", "nope", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, 404, infergate.ENotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, resp, err := x.Execute(t.Context(), tc.model, []byte(tc.body))
			if err != nil {
				t.Fatalf("err %v, want a permanent failure as a status", err)
			}
			var e struct{ Error, Code string }
			if status != tc.status || json.Unmarshal(resp, &e) != nil || e.Code != tc.code || e.Error == "" {
				t.Fatalf("status %d: %s", status, resp)
			}
		})
	}
}

func TestExecuteOverloadIsTransient(t *testing.T) {
	hang := make(chan struct{})
	sess := &fake.Session{Hang: hang}
	classes := map[string]batching.Policy{"bulk": {Kind: batching.Single, MaxQueueSize: 1}}
	eng := newEngine(t, classes, func() *fake.Session { return sess })
	defer close(hang)
	x := httpapi.NewExecutor(eng, kserve.Limits{})
	m, _ := eng.Model("sum")
	body := []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// One request runs (and hangs), one queues, the third is rejected.
	go func() { _, _, _ = x.Execute(ctx, "sum", body) }()
	waitFor("first running", func() bool { return len(sess.Batches()) == 1 })
	go func() { _, _, _ = x.Execute(ctx, "sum", body) }()
	waitFor("second queued", func() bool { return m.Sched.QueueLen(infergate.ClassBulk) == 1 })
	status, resp, err := x.Execute(t.Context(), "sum", body)
	if err == nil || infergate.ErrorCode(err) != infergate.EOverloaded {
		t.Fatalf("status %d, err %v: %s; want an overloaded error", status, err, resp)
	}
	if status != 0 || resp != nil {
		t.Fatalf("status %d, resp %q with an error", status, resp)
	}
}
