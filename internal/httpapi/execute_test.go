package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/jobs/runner"
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
	rep := x.ExecuteOne(t.Context(), "sum", body)
	status, resp, err := rep.Status, rep.Body, rep.Err
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
			rep := x.ExecuteOne(t.Context(), tc.model, []byte(tc.body))
			status, resp, err := rep.Status, rep.Body, rep.Err
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
	go func() { x.ExecuteOne(ctx, "sum", body) }()
	waitFor("first running", func() bool { return len(sess.Batches()) == 1 })
	go func() { x.ExecuteOne(ctx, "sum", body) }()
	waitFor("second queued", func() bool { return m.Sched.QueueLen(infergate.ClassBulk) == 1 })
	rep := x.ExecuteOne(t.Context(), "sum", body)
	status, resp, err := rep.Status, rep.Body, rep.Err
	if err == nil || infergate.ErrorCode(err) != infergate.EOverloaded {
		t.Fatalf("status %d, err %v: %s; want an overloaded error", status, err, resp)
	}
	if status != 0 || resp != nil {
		t.Fatalf("status %d, resp %q with an error", status, resp)
	}
}

func TestExecuteGroups(t *testing.T) {
	// A batch holding a row that starts with 666 fails in the runtime, as
	// if that item crashed it.
	poison := func(in []infergate.Tensor) error {
		for _, v := range fake.Floats(in[0]) {
			if v == 666 {
				return errors.New("the runtime choked on an item")
			}
		}
		return nil
	}
	row := func(vals string) string {
		return `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[` + vals + `]}]}`
	}
	bodies := []string{
		row("1,1,1,1"), row("2,2,2,2"), row("3,3,3,3"), row("4,4,4,4"),
		`{"id":"two","inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,8]]}]}`,
		`{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}`, // bad shape
		row("666,0,0,0"), // fails the runtime
		`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}`,
		row("5,5,5,5"), row("6,6,6,6"), row("7,7,7,7"), row("8,8,8,8"), row("9,9,9,9"),
	}
	type want struct {
		status int
		sums   []float64 // status 200
		err    bool      // a transient error
	}
	wants := []want{
		{200, []float64{4}, false}, {200, []float64{8}, false}, {200, []float64{12}, false}, {200, []float64{16}, false},
		{200, []float64{10, 26}, false},
		{400, nil, false},
		{0, nil, true},
		{400, nil, false},
		{200, []float64{20}, false}, {200, []float64{24}, false}, {200, []float64{28}, false}, {200, []float64{32}, false}, {200, []float64{36}, false},
	}
	for _, group := range []int{1, 3, 8} {
		t.Run(fmt.Sprintf("group=%d", group), func(t *testing.T) {
			sess := &fake.Session{Err: poison}
			x := httpapi.NewExecutor(newEngine(t, nil, func() *fake.Session { return sess }), kserve.Limits{})
			x.Group = group
			in := make([][]byte, len(bodies))
			for i, b := range bodies {
				in[i] = []byte(b)
			}
			got := make([]int, len(bodies))
			var mu sync.Mutex
			x.Execute(t.Context(), "sum", in, func(i int, rep runner.Reply) {
				mu.Lock()
				got[i]++
				mu.Unlock()
				w := wants[i]
				if w.err {
					if rep.Err == nil || rep.Status != 0 {
						t.Errorf("item %d: status %d err %v, want a transient error", i, rep.Status, rep.Err)
					}
					return
				}
				if rep.Err != nil || rep.Status != w.status {
					t.Errorf("item %d: status %d err %v: %s; want %d", i, rep.Status, rep.Err, rep.Body, w.status)
					return
				}
				if w.status != 200 {
					return
				}
				var out struct {
					ID      string `json:"id"`
					Outputs []struct {
						Shape []int64   `json:"shape"`
						Data  []float64 `json:"data"`
					} `json:"outputs"`
				}
				if err := json.Unmarshal(rep.Body, &out); err != nil || len(out.Outputs) != 1 ||
					!slices.Equal(out.Outputs[0].Data, w.sums) || out.Outputs[0].Shape[0] != int64(len(w.sums)) {
					t.Errorf("item %d: %s, want sums %v", i, rep.Body, w.sums)
				}
				if i == 4 && out.ID != "two" {
					t.Errorf("item 4 lost its id: %s", rep.Body)
				}
			})
			for i, n := range got {
				if n != 1 {
					t.Errorf("item %d answered %d times", i, n)
				}
			}
		})
	}
}

func TestExecuteSplitsAndPrices(t *testing.T) {
	// Multi-row items between one-row ones, all joinable and good: one
	// request per group, outputs split back by rows, and each item priced
	// at its rows' share of the busy time, which adds up to the ledger's.
	bodies := []string{
		`{"id":"a","inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[1,1,1,1,2,2,2,2]}]}`,
		`{"id":"b","inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[3,3,3,3]}]}`,
		`{"id":"c","inputs":[{"name":"input","shape":[3,4],"datatype":"FP32","data":[4,4,4,4,5,5,5,5,6,6,6,6]}]}`,
		`{"id":"d","inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[7,7,7,7]}]}`,
	}
	sums := [][]float64{{4, 8}, {12}, {16, 20, 24}, {28}}
	tests := []struct {
		group int
		runs  []int // runtime batch sizes, when the grouping decides them
	}{
		{8, []int{7}},
		{2, nil}, // a+b and c+d, which the scheduler may join or not
		{1, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("group=%d", tc.group), func(t *testing.T) {
			sess := &fake.Session{Latency: func(n int) time.Duration { return time.Duration(n) * time.Millisecond }}
			led := cost.New(clock.Real{}, 3600) // $1 per instance-second
			eng := engine.New(engine.Options{Runtime: fake.Runtime{New: func() *fake.Session { return sess }}, Ledger: led})
			if err := eng.Load(t.Context(), config.Model{Name: "sum", Path: "unused", Instances: 1, MaxBatchSize: 8, WarmupRuns: -1}); err != nil {
				t.Fatal(err)
			}
			eng.SetReady(true)
			t.Cleanup(func() { _ = eng.Close(context.Background()) })
			x := httpapi.NewExecutor(eng, kserve.Limits{})
			x.Group = tc.group
			in := make([][]byte, len(bodies))
			for i, b := range bodies {
				in[i] = []byte(b)
			}
			var mu sync.Mutex
			var total float64
			costs := make([]float64, len(bodies))
			x.Execute(t.Context(), "sum", in, func(i int, rep runner.Reply) {
				var out struct {
					ID      string `json:"id"`
					Outputs []struct {
						Shape []int64   `json:"shape"`
						Data  []float64 `json:"data"`
					} `json:"outputs"`
				}
				if rep.Err != nil || rep.Status != 200 || json.Unmarshal(rep.Body, &out) != nil || len(out.Outputs) != 1 ||
					out.ID != string(rune('a'+i)) || !slices.Equal(out.Outputs[0].Data, sums[i]) ||
					out.Outputs[0].Shape[0] != int64(len(sums[i])) {
					t.Errorf("item %d: status %d err %v: %s; want id %c, sums %v", i, rep.Status, rep.Err, rep.Body, 'a'+i, sums[i])
				}
				mu.Lock()
				costs[i] = rep.CostUSD
				total += rep.CostUSD
				mu.Unlock()
			})
			if tc.runs != nil && !slices.Equal(sess.Batches(), tc.runs) {
				t.Errorf("runtime batches %v, want %v", sess.Batches(), tc.runs)
			}
			var ledger float64
			for _, l := range led.Report().Lines {
				if l.Class == "bulk" {
					ledger += l.CostUSD
				}
			}
			// Shares are whole nanoseconds of busy time: equal to a few
			// nanoseconds per item.
			if ledger <= 0 || math.Abs(total-ledger) > 1e-3*ledger {
				t.Errorf("items cost %v in all, the ledger's bulk line %v", total, ledger)
			}
			if tc.group == 8 {
				// One batch: cost by rows, 2:1:3:1.
				for i, rows := range []float64{2, 1, 3, 1} {
					if want := total * rows / 7; math.Abs(costs[i]-want) > 1e-3*total {
						t.Errorf("item %d cost %v, want %v (its rows' share)", i, costs[i], want)
					}
				}
			}
		})
	}
}
