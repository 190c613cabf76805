package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/events"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/switcher"
)

// newModeServer serves the fake model "sum" with a mode switcher on its
// normal class, routed through the engine as serve wires it.
func newModeServer(t *testing.T) (*httptest.Server, *events.Log) {
	t.Helper()
	reg := prometheus.NewRegistry()
	eng := engine.New(engine.Options{Runtime: fake.Runtime{}, Registerer: reg, Ledger: cost.New(nil, 1)})
	if err := eng.Load(t.Context(), config.Model{Name: "sum", Path: "unused", Instances: 1, MaxBatchSize: 8, WarmupRuns: 1}); err != nil {
		t.Fatal(err)
	}
	eng.SetReady(true)
	m, _ := eng.Model("sum")
	ev := events.New(nil, nil, reg, 0)
	sw, err := switcher.New("sum", m.Sched, map[infergate.Class]switcher.Config{infergate.ClassNormal: {SLO: 50 * time.Millisecond}}, ev, nil, 1, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.SetRouter(sw)
	modes := func(name string) httpapi.ModeController {
		if name == "sum" {
			return sw
		}
		return nil
	}
	srv := httptest.NewServer(httpapi.New(eng, reg, httpapi.Options{MaxBodyBytes: 1 << 16, Events: ev, Modes: modes}, nil))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = eng.Close(ctx)
	})
	return srv, ev
}

func TestModeAPI(t *testing.T) {
	srv, ev := newModeServer(t)
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantBody   string
	}{
		{"state", "GET", "/v1/models/sum/modes", "", 200, `"mode":"hybrid"`},
		{"unknown model", "GET", "/v1/models/nope/modes", "", 404, "not found"},
		{"pin realtime", "POST", "/v1/models/sum/modes/normal", `{"action":"pin","mode":"realtime"}`, 200, `"pinned":true`},
		{"force while pinned to the same mode", "POST", "/v1/models/sum/modes/normal", `{"action":"switch","mode":"realtime"}`, 409, "already served in realtime"},
		{"force a bad setting", "POST", "/v1/models/sum/modes/normal", `{"action":"switch","mode":"hybrid","policy":{"policy":"hybrid","max_queue_delay":"200ms"}}`, 200, `"phase":"shifting"`},
		{"force again while shifting", "POST", "/v1/models/sum/modes/normal", `{"action":"switch","mode":"realtime"}`, 409, "already switching"},
		{"unpin", "POST", "/v1/models/sum/modes/normal", `{"action":"unpin"}`, 200, `"pinned":false`},
		{"bad action", "POST", "/v1/models/sum/modes/normal", `{"action":"boost"}`, 400, "want pin, unpin or switch"},
		{"bad mode", "POST", "/v1/models/sum/modes/normal", `{"action":"pin","mode":"turbo"}`, 400, "want realtime, hybrid or batch"},
		{"bad duration", "POST", "/v1/models/sum/modes/normal", `{"action":"switch","mode":"realtime","policy":{"max_queue_delay":"soon"}}`, 400, "want a duration"},
		{"policy on pin", "POST", "/v1/models/sum/modes/normal", `{"action":"pin","mode":"hybrid","policy":{}}`, 400, "switch only"},
		{"unknown field", "POST", "/v1/models/sum/modes/normal", `{"action":"pin","mode":"hybrid","x":1}`, 400, "malformed"},
		{"class without switching", "POST", "/v1/models/sum/modes/urgent", `{"action":"pin","mode":"hybrid"}`, 404, "no mode switching"},
		{"unknown class", "POST", "/v1/models/sum/modes/vip", `{"action":"pin","mode":"hybrid"}`, 400, "unknown class"},
		{"events", "GET", "/v1/events?model=sum", "", 200, `"kind":"switch_start"`},
		{"events bad after", "GET", "/v1/events?after=-1", "", 400, "non-negative"},
		{"events bad limit", "GET", "/v1/events?limit=0", "", 400, "limit must be"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := doRequest(t, tc.method, srv.URL+tc.path, strings.NewReader(tc.body), nil)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantBody) {
				t.Fatalf("%s %s = %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if resp.StatusCode >= 400 && !json.Valid(body) {
				t.Fatalf("error body is not JSON: %s", body)
			}
		})
	}
	// Events come newest last, with increasing IDs.
	_, body := doRequest(t, "GET", srv.URL+"/v1/events", nil, nil)
	var list struct {
		Data []infergate.Event `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Data) != 3 || list.Data[0].Kind != "pin" || list.Data[1].Kind != "switch_start" || list.Data[2].Kind != "unpin" {
		t.Fatalf("events %+v", list.Data)
	}
	if n := len(ev.List(list.Data[1].ID, 0, "")); n != 1 {
		t.Fatalf("%d events after the second", n)
	}
	// Inference goes through the switcher: it runs in a lane and answers.
	resp, body := post(t, srv.URL+"/v2/models/sum/infer", []byte(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`), nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "10") {
		t.Fatalf("infer through the switcher: %d %s", resp.StatusCode, body)
	}
}
