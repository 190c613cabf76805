package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	srv := newServer(t, nil, nil)
	// Some served requests: the live model then has the per-request overhead too.
	for range 3 {
		if resp, b := post(t, srv.URL+"/v2/models/sum/infer", []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`), nil); resp.StatusCode != 200 {
			t.Fatalf("infer: %d %s", resp.StatusCode, b)
		}
	}
	tests := []struct {
		name, body string
		status     int
		errHas     string
	}{
		{"poisson", `{"model":"sum","workload":{"rate":50,"duration_s":5},"slo_ms":100,"cost_sensitivity":"high"}`, 200, ""},
		{"trace", `{"model":"sum","workload":{"trace_s":[10,10.1,10.1,10.5]},"slo_ms":100}`, 200, ""},
		{"malformed", `{"model":`, 400, "malformed plan request"},
		{"unknown field", `{"model":"sum","slo":1}`, 400, "unknown field"},
		{"unknown model", `{"model":"nope","workload":{"rate":1},"slo_ms":10}`, 404, "not found"},
		{"no slo", `{"model":"sum","workload":{"rate":1}}`, 400, "slo_ms"},
		{"bad sensitivity", `{"model":"sum","workload":{"rate":1},"slo_ms":10,"cost_sensitivity":"extreme"}`, 400, "cost_sensitivity"},
		{"no rate", `{"model":"sum","workload":{},"slo_ms":10}`, 400, "workload"},
		{"too many arrivals", `{"model":"sum","workload":{"rate":1000000,"duration_s":86400},"slo_ms":10}`, 400, "arrivals"},
		{"decreasing trace", `{"model":"sum","workload":{"trace_s":[2,1]},"slo_ms":10}`, 400, "trace_s[1]"},
		{"bad instances", `{"model":"sum","workload":{"rate":1},"slo_ms":10,"max_instances":-1}`, 400, "max_instances"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(t, srv.URL+"/v1/plan", []byte(tt.body), nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.status != 200 {
				var e struct {
					Error string `json:"error"`
				}
				if json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error, tt.errHas) {
					t.Errorf("error body %s, want one mentioning %q", b, tt.errHas)
				}
				return
			}
			var out struct {
				Candidates     []map[string]any `json:"candidates"`
				Recommendation struct {
					Mode      string         `json:"mode"`
					Settings  map[string]any `json:"settings"`
					P99MS     float64        `json:"p99_ms"`
					CostPer1k float64        `json:"cost_per_1k"`
					Reasons   []string       `json:"reasons"`
				} `json:"recommendation"`
			}
			if err := json.Unmarshal(b, &out); err != nil {
				t.Fatal(err)
			}
			r := out.Recommendation
			if len(out.Candidates) == 0 || r.Mode == "" || r.Settings == nil || r.CostPer1k <= 0 || len(r.Reasons) == 0 {
				t.Errorf("plan %s", b)
			}
		})
	}
	// The live profile now reports the overhead it measured.
	resp, b := doRequest(t, "GET", srv.URL+"/v1/models/sum/profile", nil, nil)
	var prof struct {
		Overhead struct {
			Count int64 `json:"count"`
		} `json:"overhead"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &prof) != nil || prof.Overhead.Count < 3 {
		t.Errorf("profile %d %s: want an overhead of at least 3 requests", resp.StatusCode, b)
	}
}
