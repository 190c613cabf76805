package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/jobs"
	"github.com/infergate/infergate/internal/jobs/sqlite"
	"github.com/infergate/infergate/internal/kserve"
	"github.com/infergate/infergate/internal/openai"
)

type batchEnv struct {
	url     string
	store   *sqlite.Store
	eng     *engine.Engine
	notify  *atomic.Int32
	clock   *clock.Fake
	maxSize int64
}

// newBatchServer serves the API with a SQLite job store over the fake
// model "sum"; Rate reports 2 items/s for every batch.
func newBatchServer(t *testing.T, maxUpload int64) *batchEnv {
	t.Helper()
	eng := newEngine(t, nil, nil)
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "jobs.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	env := &batchEnv{store: st, eng: eng, notify: new(atomic.Int32), clock: clock.NewFake(time.Unix(1_800_000_000, 0))}
	h := httpapi.New(eng, prometheus.NewRegistry(), httpapi.Options{
		Jobs:           st,
		Notify:         func() { env.notify.Add(1) },
		Rate:           func(string) (float64, bool) { return 2, true },
		Clock:          env.clock,
		MaxUploadBytes: maxUpload,
	}, nil)
	srv := httptest.NewServer(h)
	env.url = srv.URL
	t.Cleanup(func() {
		srv.Close()
		_ = st.Close()
	})
	return env
}

func (e *batchEnv) do(t *testing.T, method, path string, body io.Reader, hdr map[string]string) (int, []byte) {
	t.Helper()
	resp, b := doRequest(t, method, e.url+path, body, hdr)
	return resp.StatusCode, b
}

// upload posts content as a multipart upload with the given purpose.
func (e *batchEnv) upload(t *testing.T, purpose, name, content string) (int, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if purpose != "" {
		_ = mw.WriteField("purpose", purpose)
	}
	fw, _ := mw.CreateFormFile("file", name)
	_, _ = io.WriteString(fw, content)
	_ = mw.Close()
	return e.do(t, http.MethodPost, "/v1/files", &buf, map[string]string{"Content-Type": mw.FormDataContentType()})
}

func (e *batchEnv) uploadOK(t *testing.T, content string) string {
	t.Helper()
	status, b := e.upload(t, "batch", "in.jsonl", content)
	if status != 200 {
		t.Fatalf("upload: status %d: %s", status, b)
	}
	var f openai.FileObject
	mustJSON(t, b, &f)
	return f.ID
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func wantError(t *testing.T, status int, b []byte, want int) apiError {
	t.Helper()
	var e apiError
	if status != want {
		t.Fatalf("status %d, want %d: %s", status, want, b)
	}
	mustJSON(t, b, &e)
	if e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI error: %s", b)
	}
	return e
}

func inputLine(id string, url string) string {
	return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}}`, id, url) + "\n"
}

func goodFile(n int) string {
	var sb strings.Builder
	for i := range n {
		sb.WriteString(inputLine(fmt.Sprintf("req-%d", i), "/v2/models/sum/infer"))
	}
	return sb.String()
}

func TestFilesRoundTrip(t *testing.T) {
	env := newBatchServer(t, 0)
	content := goodFile(3)
	status, b := env.upload(t, "batch", "in.jsonl", content)
	if status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	var f map[string]any
	mustJSON(t, b, &f)
	id, _ := f["id"].(string)
	if !strings.HasPrefix(id, "file-") || f["object"] != "file" || f["purpose"] != "batch" || f["filename"] != "in.jsonl" ||
		f["bytes"] != float64(len(content)) || f["created_at"] == nil {
		t.Fatalf("file %s", b)
	}
	if _, ok := f["expires_at"]; !ok {
		t.Fatalf("expires_at missing: %s", b)
	}
	status, b = env.do(t, http.MethodGet, "/v1/files/"+id, nil, nil)
	if status != 200 || !strings.Contains(string(b), id) {
		t.Fatalf("get: status %d: %s", status, b)
	}
	status, b = env.do(t, http.MethodGet, "/v1/files", nil, nil)
	var list openai.ListResponse[openai.FileObject]
	mustJSON(t, b, &list)
	if status != 200 || len(list.Data) != 1 || list.Data[0].ID != id || list.HasMore || *list.FirstID != id {
		t.Fatalf("list: status %d: %s", status, b)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, env.url+"/v1/files/"+id+"/content", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != content || resp.Header.Get("Content-Type") != "application/jsonl" {
		t.Fatalf("content: status %d, type %q: %q", resp.StatusCode, resp.Header.Get("Content-Type"), got)
	}
	status, b = env.do(t, http.MethodDelete, "/v1/files/"+id, nil, nil)
	if status != 200 || string(bytes.TrimSpace(b)) != `{"deleted":true,"id":"`+id+`","object":"file"}` {
		t.Fatalf("delete: status %d: %s", status, b)
	}
	status, b = env.do(t, http.MethodGet, "/v1/files/"+id, nil, nil)
	wantError(t, status, b, 404)
	status, b = env.do(t, http.MethodDelete, "/v1/files/"+id, nil, nil)
	wantError(t, status, b, 404)
	status, b = env.do(t, http.MethodGet, "/v1/files/"+id+"/content", nil, nil)
	wantError(t, status, b, 404)
}

func TestUploadErrors(t *testing.T) {
	env := newBatchServer(t, 1024)
	status, b := env.upload(t, "fine-tune", "in.jsonl", goodFile(1))
	if e := wantError(t, status, b, 400); e.Error.Param == nil || *e.Error.Param != "purpose" {
		t.Fatalf("error %s", b)
	}
	status, b = env.upload(t, "", "in.jsonl", goodFile(1))
	wantError(t, status, b, 400)
	status, b = env.upload(t, "batch", "in.jsonl", strings.Repeat("x", 4096))
	wantError(t, status, b, 413)
	status, b = env.do(t, http.MethodPost, "/v1/files", strings.NewReader("{}"), map[string]string{"Content-Type": "application/json"})
	wantError(t, status, b, 400)
	// Nothing was stored.
	status, b = env.do(t, http.MethodGet, "/v1/files", nil, nil)
	if status != 200 || !strings.Contains(string(b), `"data":[]`) {
		t.Fatalf("list: status %d: %s", status, b)
	}
}

type batchJSON struct {
	ID            string            `json:"id"`
	Object        string            `json:"object"`
	Status        string            `json:"status"`
	Model         string            `json:"model"`
	InputFileID   string            `json:"input_file_id"`
	CreatedAt     int64             `json:"created_at"`
	InProgressAt  *int64            `json:"in_progress_at"`
	ExpiresAt     *int64            `json:"expires_at"`
	FailedAt      *int64            `json:"failed_at"`
	CancellingAt  *int64            `json:"cancelling_at"`
	Metadata      map[string]string `json:"metadata"`
	RequestCounts struct {
		Total, Completed, Failed int
	} `json:"request_counts"`
	Errors *struct {
		Object string `json:"object"`
		Data   []struct {
			Code    string  `json:"code"`
			Message string  `json:"message"`
			Param   *string `json:"param"`
			Line    *int    `json:"line"`
		} `json:"data"`
	} `json:"errors"`
	Infergate *struct {
		Progress              float64 `json:"progress"`
		ItemsPerSec           float64 `json:"items_per_sec"`
		EstimatedCompletionAt *int64  `json:"estimated_completion_at"`
	} `json:"infergate"`
}

func (e *batchEnv) createBatch(t *testing.T, fileID, key string, metadata map[string]string) (int, []byte) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"input_file_id": fileID, "endpoint": "/v2/models/sum/infer", "completion_window": "24h", "metadata": metadata})
	var hdr map[string]string
	if key != "" {
		hdr = map[string]string{"Idempotency-Key": key}
	}
	return e.do(t, http.MethodPost, "/v1/batches", bytes.NewReader(body), hdr)
}

func (e *batchEnv) createBatchOK(t *testing.T, fileID string) batchJSON {
	t.Helper()
	status, b := e.createBatch(t, fileID, "", nil)
	if status != 200 {
		t.Fatalf("create: status %d: %s", status, b)
	}
	var bj batchJSON
	mustJSON(t, b, &bj)
	return bj
}

func TestCreateBatch(t *testing.T) {
	env := newBatchServer(t, 0)
	fid := env.uploadOK(t, goodFile(20))
	status, b := env.createBatch(t, fid, "", map[string]string{"job": "nightly"})
	if status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	var bj batchJSON
	mustJSON(t, b, &bj)
	if bj.Object != "batch" || bj.Status != "in_progress" || bj.Model != "sum" || bj.InputFileID != fid ||
		bj.RequestCounts.Total != 20 || bj.InProgressAt == nil || bj.ExpiresAt == nil ||
		*bj.ExpiresAt != bj.CreatedAt+24*3600 || bj.Errors != nil || bj.Metadata["job"] != "nightly" {
		t.Fatalf("batch %s", b)
	}
	if bj.Infergate == nil || bj.Infergate.Progress != 0 || bj.Infergate.ItemsPerSec != 2 ||
		bj.Infergate.EstimatedCompletionAt == nil || *bj.Infergate.EstimatedCompletionAt != env.clock.Now().Unix()+10 {
		t.Fatalf("extension %s", b)
	}
	for _, k := range []string{`"output_file_id":null`, `"failed_at":null`, `"cancelled_at":null`} {
		if !strings.Contains(string(b), k) {
			t.Fatalf("batch lacks %s: %s", k, b)
		}
	}
	if n := env.notify.Load(); n != 1 {
		t.Fatalf("Notify called %d times", n)
	}
	counts, err := env.store.CountItems(t.Context(), bj.ID)
	if err != nil || counts.Pending != 20 {
		t.Fatalf("items %+v, %v", counts, err)
	}
	var first []string
	err = env.store.ItemResults(t.Context(), bj.ID, jobs.ItemPending, func(it *jobs.Item) error {
		first = append(first, it.CustomID)
		return nil
	})
	if err != nil || len(first) != 20 || first[0] != "req-0" || first[19] != "req-19" {
		t.Fatalf("items %v, %v", first, err)
	}
	status, b = env.do(t, http.MethodGet, "/v1/batches/"+bj.ID, nil, nil)
	if status != 200 || !strings.Contains(string(b), `"status":"in_progress"`) {
		t.Fatalf("get: status %d: %s", status, b)
	}
	// The input file is in use.
	status, b = env.do(t, http.MethodDelete, "/v1/files/"+fid, nil, nil)
	wantError(t, status, b, 409)

	// Each item was stored decoded, in binary form, and runs to the same
	// response as its line's JSON body.
	leased, err := env.store.LeaseItems(t.Context(), bj.ID, "test", 1, time.Minute)
	if err != nil || len(leased) != 1 {
		t.Fatalf("lease: %v, %v", leased, err)
	}
	if body := leased[0].Body; len(body) == 0 || body[0] != 0 {
		t.Fatalf("stored body is not in binary form: %q", body)
	}
	x := httpapi.NewExecutor(env.eng, kserve.Limits{})
	r1 := x.ExecuteOne(t.Context(), "sum", leased[0].Body)
	r2 := x.ExecuteOne(t.Context(), "sum", []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`))
	st1, fromStored, err1 := r1.Status, r1.Body, r1.Err
	st2, fromJSON, err2 := r2.Status, r2.Body, r2.Err
	if err1 != nil || err2 != nil || st1 != 200 || st2 != 200 || !bytes.Equal(fromStored, fromJSON) {
		t.Fatalf("stored body: %d %v %s; JSON body: %d %v %s", st1, err1, fromStored, st2, err2, fromJSON)
	}
	// A corrupt stored body is a permanent error, not a crash.
	for _, bad := range [][]byte{{0}, {0, 0xff}, {0, 200, 1, '{'}} {
		if r := x.ExecuteOne(t.Context(), "sum", bad); r.Err != nil || r.Status != 400 {
			t.Errorf("corrupt body %q: status %d, err %v: %s", bad, r.Status, r.Err, r.Body)
		}
	}
}

func TestCreateBatchIdempotency(t *testing.T) {
	env := newBatchServer(t, 0)
	fid := env.uploadOK(t, goodFile(2))
	status, b := env.createBatch(t, fid, "k1", map[string]string{"a": "1", "b": "2"})
	if status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	var first, again batchJSON
	mustJSON(t, b, &first)
	status, b = env.createBatch(t, fid, "k1", map[string]string{"b": "2", "a": "1"})
	if status != 200 {
		t.Fatalf("replay: status %d: %s", status, b)
	}
	mustJSON(t, b, &again)
	if again.ID != first.ID || again.RequestCounts.Total != 2 {
		t.Fatalf("replay made %s, first %s", again.ID, first.ID)
	}
	if n := env.notify.Load(); n != 1 {
		t.Fatalf("Notify called %d times", n)
	}
	status, b = env.createBatch(t, fid, "k1", map[string]string{"a": "other"})
	wantError(t, status, b, 409)
	status, b = env.do(t, http.MethodGet, "/v1/batches", nil, nil)
	var list openai.ListResponse[json.RawMessage]
	mustJSON(t, b, &list)
	if status != 200 || len(list.Data) != 1 {
		t.Fatalf("list: status %d: %s", status, b)
	}
}

func TestCreateBatchBadFile(t *testing.T) {
	env := newBatchServer(t, 0)
	content := inputLine("a", "/v2/models/sum/infer") +
		`{"custom_id":"b","method":"POST",` + "\n" +
		inputLine("a", "/v2/models/sum/infer") +
		inputLine("c", "/v2/models/nope/infer") +
		inputLine("d", "/v2/models/sum/infer")
	fid := env.uploadOK(t, content)
	status, b := env.createBatch(t, fid, "", nil)
	if status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	var bj batchJSON
	mustJSON(t, b, &bj)
	if bj.Status != "failed" || bj.FailedAt == nil || bj.RequestCounts.Total != 0 || bj.Errors == nil || bj.Errors.Object != "list" {
		t.Fatalf("batch %s", b)
	}
	want := []struct {
		line int
		code string
	}{{2, openai.CodeInvalidJSONLine}, {3, openai.CodeDuplicateCustomID}, {4, openai.CodeURLMismatch}}
	if len(bj.Errors.Data) != len(want) {
		t.Fatalf("errors %s", b)
	}
	for i, w := range want {
		e := bj.Errors.Data[i]
		if e.Line == nil || *e.Line != w.line || e.Code != w.code || e.Message == "" {
			t.Fatalf("error %d: %+v, want line %d %s", i, e, w.line, w.code)
		}
	}
	if bj.Infergate == nil || bj.Infergate.Progress != 1 || bj.Infergate.EstimatedCompletionAt != nil {
		t.Fatalf("extension %s", b)
	}
	counts, err := env.store.CountItems(t.Context(), bj.ID)
	if err != nil || counts.Total() != 0 {
		t.Fatalf("items %+v, %v", counts, err)
	}
	// A failed batch cannot be cancelled.
	status, b = env.do(t, http.MethodPost, "/v1/batches/"+bj.ID+"/cancel", nil, nil)
	wantError(t, status, b, 409)

	// With an idempotency key, the replay returns the same failed batch.
	var k1, k2 batchJSON
	_, b = env.createBatch(t, fid, "bad-key", nil)
	mustJSON(t, b, &k1)
	_, b = env.createBatch(t, fid, "bad-key", nil)
	mustJSON(t, b, &k2)
	if k1.ID == "" || k1.ID != k2.ID || k2.Status != "failed" || k2.Errors == nil || len(k2.Errors.Data) != len(want) {
		t.Fatalf("replay of a bad file: %+v then %+v", k1, k2)
	}
}

func TestCreateBatchRequestErrors(t *testing.T) {
	env := newBatchServer(t, 0)
	fid := env.uploadOK(t, goodFile(1))
	for _, tc := range []struct {
		name, body string
		status     int
		param      string
	}{
		{"unknown file", `{"input_file_id":"file-nope","endpoint":"/v2/models/sum/infer","completion_window":"24h"}`, 404, "input_file_id"},
		{"unknown model", `{"input_file_id":"` + fid + `","endpoint":"/v2/models/nope/infer","completion_window":"24h"}`, 400, "endpoint"},
		{"bad endpoint", `{"input_file_id":"` + fid + `","endpoint":"/v1/chat/completions","completion_window":"24h"}`, 400, "endpoint"},
		{"bad window", `{"input_file_id":"` + fid + `","endpoint":"/v2/models/sum/infer","completion_window":"7d"}`, 400, "completion_window"},
		{"malformed", `{"input_file_id":`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, b := env.do(t, http.MethodPost, "/v1/batches", strings.NewReader(tc.body), nil)
			e := wantError(t, status, b, tc.status)
			if tc.param != "" && (e.Error.Param == nil || *e.Error.Param != tc.param) {
				t.Fatalf("param: %s", b)
			}
		})
	}
	status, b := env.do(t, http.MethodGet, "/v1/batches/batch_nope", nil, nil)
	wantError(t, status, b, 404)
	status, b = env.do(t, http.MethodPost, "/v1/batches/batch_nope/cancel", nil, nil)
	wantError(t, status, b, 404)
	status, b = env.do(t, http.MethodGet, "/v1/batches?limit=abc", nil, nil)
	wantError(t, status, b, 400)
	if n := env.notify.Load(); n != 0 {
		t.Fatalf("Notify called %d times", n)
	}
}

func TestListBatchesPagination(t *testing.T) {
	env := newBatchServer(t, 0)
	fid := env.uploadOK(t, goodFile(1))
	var ids []string
	for range 3 {
		ids = append(ids, env.createBatchOK(t, fid).ID)
	}
	status, b := env.do(t, http.MethodGet, "/v1/batches?limit=2", nil, nil)
	var page openai.ListResponse[batchJSON]
	mustJSON(t, b, &page)
	if status != 200 || len(page.Data) != 2 || !page.HasMore || page.Data[0].ID != ids[2] || page.Data[1].ID != ids[1] || *page.LastID != ids[1] {
		t.Fatalf("page 1: status %d: %s (ids %v)", status, b, ids)
	}
	status, b = env.do(t, http.MethodGet, "/v1/batches?limit=2&after="+*page.LastID, nil, nil)
	page = openai.ListResponse[batchJSON]{}
	mustJSON(t, b, &page)
	if status != 200 || len(page.Data) != 1 || page.HasMore || page.Data[0].ID != ids[0] {
		t.Fatalf("page 2: status %d: %s", status, b)
	}
	status, b = env.do(t, http.MethodGet, "/v1/batches?after=batch_nope", nil, nil)
	wantError(t, status, b, 400)
}

func TestCancelBatch(t *testing.T) {
	env := newBatchServer(t, 0)
	fid := env.uploadOK(t, goodFile(2))
	bj := env.createBatchOK(t, fid)
	status, b := env.do(t, http.MethodPost, "/v1/batches/"+bj.ID+"/cancel", nil, nil)
	var got batchJSON
	mustJSON(t, b, &got)
	if status != 200 || got.Status != "cancelling" || got.CancellingAt == nil {
		t.Fatalf("cancel: status %d: %s", status, b)
	}
	if n := env.notify.Load(); n != 2 {
		t.Fatalf("Notify called %d times, want 2 (create, cancel)", n)
	}
	// Cancelling again returns the batch as it is.
	status, b = env.do(t, http.MethodPost, "/v1/batches/"+bj.ID+"/cancel", nil, nil)
	if status != 200 || !strings.Contains(string(b), `"status":"cancelling"`) {
		t.Fatalf("second cancel: status %d: %s", status, b)
	}
	// The runner finishes it; a cancelled batch is returned as is too.
	if err := env.store.FinishBatch(context.Background(), bj.ID, jobs.StatusCancelling, jobs.StatusCancelled, time.Time{}, jobs.Outcome{}); err != nil {
		t.Fatal(err)
	}
	status, b = env.do(t, http.MethodPost, "/v1/batches/"+bj.ID+"/cancel", nil, nil)
	if status != 200 || !strings.Contains(string(b), `"status":"cancelled"`) {
		t.Fatalf("cancel of cancelled: status %d: %s", status, b)
	}
	if n := env.notify.Load(); n != 2 {
		t.Fatalf("Notify called %d times", n)
	}
}

// TestUploadFileBeforePurpose sends the parts in the order the official
// SDKs use (fields sorted by name: file, then purpose).
func TestUploadFileBeforePurpose(t *testing.T) {
	env := newBatchServer(t, 1<<20)
	for _, tc := range []struct {
		purpose string
		status  int
	}{{"batch", 200}, {"fine-tune", 400}, {"", 400}} {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, _ := mw.CreateFormFile("file", "in.jsonl")
		_, _ = io.WriteString(fw, goodFile(3))
		if tc.purpose != "" {
			_ = mw.WriteField("purpose", tc.purpose)
		}
		_ = mw.Close()
		status, b := env.do(t, http.MethodPost, "/v1/files", &buf, map[string]string{"Content-Type": mw.FormDataContentType()})
		if status != tc.status {
			t.Fatalf("purpose %q: status %d, want %d: %s", tc.purpose, status, tc.status, b)
		}
		if status == 200 {
			var f openai.FileObject
			mustJSON(t, b, &f)
			st, content := env.do(t, http.MethodGet, "/v1/files/"+f.ID+"/content", nil, nil)
			if st != 200 || string(content) != goodFile(3) {
				t.Fatalf("content: status %d: %q", st, content)
			}
		}
	}
}
