package httpapi_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/jobs/sqlite"
)

// authEnv serves the API with keys for two users and an admin.
type authEnv struct{ url string }

func newAuthServer(t *testing.T) *authEnv {
	t.Helper()
	eng := newEngine(t, nil, nil)
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "jobs.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(eng, prometheus.NewRegistry(), httpapi.Options{Jobs: st, Notify: func() {},
		APIKeys: []httpapi.APIKey{{Name: "alice", Key: "k-alice"}, {Name: "bob", Key: "k-bob", Role: httpapi.RoleUser}, {Name: "ops", Key: "k-ops", Role: httpapi.RoleAdmin}}}, nil)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		_ = st.Close()
	})
	return &authEnv{url: srv.URL}
}

func bearer(key string) map[string]string {
	if key == "" {
		return nil
	}
	return map[string]string{"Authorization": "Bearer " + key}
}

func (e *authEnv) do(t *testing.T, method, path, key string, body io.Reader, hdr map[string]string) (int, []byte) {
	t.Helper()
	h := bearer(key)
	for k, v := range hdr {
		if h == nil {
			h = map[string]string{}
		}
		h[k] = v
	}
	resp, b := doRequest(t, method, e.url+path, body, h)
	return resp.StatusCode, b
}

func (e *authEnv) upload(t *testing.T, key string) string {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	_, _ = io.WriteString(fw, goodFile(3))
	_ = mw.Close()
	status, b := e.do(t, http.MethodPost, "/v1/files", key, &buf, map[string]string{"Content-Type": mw.FormDataContentType()})
	if status != 200 {
		t.Fatalf("upload as %s: %d %s", key, status, b)
	}
	var f struct{ ID string }
	mustJSON(t, b, &f)
	return f.ID
}

func TestAPIKeys(t *testing.T) {
	e := newAuthServer(t)
	fileA := e.upload(t, "k-alice")
	body, _ := json.Marshal(map[string]any{"input_file_id": fileA, "endpoint": "/v2/models/sum/infer", "completion_window": "24h"})
	status, b := e.do(t, http.MethodPost, "/v1/batches", "k-alice", bytes.NewReader(body), nil)
	if status != 200 {
		t.Fatalf("create batch: %d %s", status, b)
	}
	var batchA struct{ ID string }
	mustJSON(t, b, &batchA)
	fileB := e.upload(t, "k-bob")

	infer := `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`
	tests := []struct {
		name, method, path, key, body string
		want                          int
	}{
		// Missing or wrong keys: 401 everywhere but the health checks.
		{"live without a key", "GET", "/v2/health/live", "", "", 200},
		{"ready without a key", "GET", "/v2/health/ready", "", "", 200},
		{"infer without a key", "POST", "/v2/models/sum/infer", "", infer, 401},
		{"infer with a wrong key", "POST", "/v2/models/sum/infer", "nope", infer, 401},
		{"infer with a key", "POST", "/v2/models/sum/infer", "k-bob", infer, 200},
		{"files without a key", "GET", "/v1/files", "", "", 401},
		{"metadata without a key", "GET", "/v2/models/sum", "", "", 401},
		// Another key's objects are not found, on every route.
		{"own file", "GET", "/v1/files/" + fileA, "k-alice", "", 200},
		{"other's file", "GET", "/v1/files/" + fileA, "k-bob", "", 404},
		{"other's file content", "GET", "/v1/files/" + fileA + "/content", "k-bob", "", 404},
		{"other's file delete", "DELETE", "/v1/files/" + fileA, "k-bob", "", 404},
		{"own batch", "GET", "/v1/batches/" + batchA.ID, "k-alice", "", 200},
		{"other's batch", "GET", "/v1/batches/" + batchA.ID, "k-bob", "", 404},
		{"other's batch cancel", "POST", "/v1/batches/" + batchA.ID + "/cancel", "k-bob", "", 404},
		{"batch on another's file", "POST", "/v1/batches", "k-bob", `{"input_file_id":"` + fileA + `","endpoint":"/v2/models/sum/infer","completion_window":"24h"}`, 404},
		{"admin sees no user's objects", "GET", "/v1/files/" + fileB, "k-ops", "", 404},
		// Operator routes need an admin key.
		{"metrics as a user", "GET", "/metrics", "k-alice", "", 403},
		{"metrics as admin", "GET", "/metrics", "k-ops", "", 200},
		{"cost as a user", "GET", "/v1/cost", "k-alice", "", 403},
		{"cost as admin", "GET", "/v1/cost", "k-ops", "", 200},
		{"plan as a user", "POST", "/v1/plan", "k-alice", "{}", 403},
		{"modes as a user", "POST", "/v1/models/sum/modes/normal", "k-alice", `{"action":"unpin"}`, 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			status, b := e.do(t, tc.method, tc.path, tc.key, body, nil)
			if status != tc.want {
				t.Fatalf("%s %s as %q = %d %s, want %d", tc.method, tc.path, tc.key, status, b, tc.want)
			}
			if status >= 400 && !json.Valid(b) {
				t.Fatalf("error body is not JSON: %s", b)
			}
		})
	}
	// Lists show only the key's own objects.
	for key, want := range map[string]string{"k-alice": fileA, "k-bob": fileB} {
		_, b := e.do(t, "GET", "/v1/files", key, nil, nil)
		var list struct{ Data []struct{ ID string } }
		mustJSON(t, b, &list)
		if len(list.Data) != 1 || list.Data[0].ID != want {
			t.Errorf("files of %s: %+v, want only %s", key, list.Data, want)
		}
		_, b = e.do(t, "GET", "/v1/batches", key, nil, nil)
		mustJSON(t, b, &list)
		if n := len(list.Data); (key == "k-alice") != (n == 1) {
			t.Errorf("batches of %s: %+v", key, list.Data)
		}
	}
	// A 401 on the OpenAI routes has the OpenAI error shape and a
	// challenge; a browser's Basic auth carries the key as the password.
	status, b = e.do(t, "GET", "/v1/files", "", nil, nil)
	var oe apiError
	mustJSON(t, b, &oe)
	if status != 401 || oe.Error.Message == "" {
		t.Fatalf("401 body %s", b)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:k-ops"))
	if status, b := e.do(t, "GET", "/metrics", "", nil, map[string]string{"Authorization": basic}); status != 200 {
		t.Fatalf("basic auth: %d %s", status, b)
	}
}

func TestCompressedBodiesRefused(t *testing.T) {
	srv := newServer(t, nil, nil)
	for _, tc := range []struct {
		enc  string
		want int
	}{{"gzip", 415}, {"deflate", 415}, {"br", 415}, {"identity", 200}} {
		resp, b := post(t, srv.URL+"/v2/models/sum/infer", []byte(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`),
			map[string]string{"Content-Encoding": tc.enc})
		if resp.StatusCode != tc.want || !json.Valid(b) {
			t.Errorf("Content-Encoding %s: %d %s, want %d", tc.enc, resp.StatusCode, b, tc.want)
		}
	}
}
