package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate/internal/backend/fake"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/jobs/sqlite"
	"github.com/infergate/infergate/internal/openai"
)

// fuzzMaxUpload is the upload limit of FuzzUpload's server: small, so that
// the fuzzer reaches the "file too large" path.
const fuzzMaxUpload = 1 << 10

// fuzzBoundary is the boundary of the seed bodies.
const fuzzBoundary = "infergate-fuzz-boundary"

// FuzzUpload sends fuzzed multipart bodies and Content-Type headers
// through POST /v1/files of the real handler over a SQLite job store. For
// every input:
//   - the handler neither panics nor answers 5xx;
//   - every answer other than 200 is an OpenAI error in JSON;
//   - a 200 comes only for a well-formed upload (see [wellFormedUpload]),
//     and the stored file is exactly the file part, under its name;
//   - a well-formed upload that fits the limits gets a 200.
func FuzzUpload(f *testing.F) {
	h := newUploadHandler(f)
	for _, s := range uploadSeeds(f) {
		f.Add(s.contentType, s.body)
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/files", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		status, resp := rec.Code, rec.Body.Bytes()

		if status >= 500 {
			t.Fatalf("status %d: %s", status, resp)
		}
		want, ok := wellFormedUpload(contentType, body)
		if status != 200 {
			checkErrorBody(t, rec)
			if ok && len(body) <= fuzzMaxUpload {
				t.Fatalf("well-formed upload (file %q, %d bytes) refused with %d: %s", want.name, len(want.content), status, resp)
			}
			return
		}
		if !ok {
			// A file part cut short (testdata/fuzz/FuzzUpload/
			// truncated-after-purpose) once got here: the stores took
			// the multipart reader's io.ErrUnexpectedEOF for the end.
			t.Fatalf("200 for a malformed upload: %s", resp)
		}
		var fo openai.FileObject
		if err := json.Unmarshal(resp, &fo); err != nil {
			t.Fatalf("200 body: %v: %s", err, resp)
		}
		wantName := jsonString(want.name)
		if want.name == "" {
			wantName = "file"
		}
		if fo.ID == "" || fo.Object != openai.ObjectFile || fo.Purpose != openai.PurposeBatch ||
			fo.Bytes != int64(len(want.content)) || fo.Filename != wantName {
			t.Fatalf("file object %+v, want %d bytes named %q", fo, len(want.content), wantName)
		}
		get := httptest.NewRequest(http.MethodGet, "/v1/files/"+fo.ID+"/content", nil)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, get)
		if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), want.content) {
			t.Fatalf("stored content: status %d, %q; want %q", rec.Code, rec.Body.Bytes(), want.content)
		}
	})
}

// newUploadHandler serves the API over a fresh SQLite job store, with no
// models and a [fuzzMaxUpload] byte upload limit. It is built once per
// fuzz process, outside f.Fuzz.
func newUploadHandler(tb testing.TB) http.Handler {
	tb.Helper()
	eng := engine.New(engine.Options{Runtime: fake.Runtime{}})
	st, err := sqlite.Open(filepath.Join(tb.TempDir(), "jobs.db"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = st.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = eng.Close(ctx)
	})
	return httpapi.New(eng, prometheus.NewRegistry(), httpapi.Options{Jobs: st, MaxUploadBytes: fuzzMaxUpload}, nil)
}

// upload is the file part a well-formed upload stores.
type upload struct {
	name    string
	content []byte
	// truncated is set for a malformed upload whose file part, after the
	// purpose, ended without its closing boundary.
	truncated bool
}

// wellFormedUpload is the reference for what POST /v1/files accepts,
// written from its documented contract: a multipart/form-data body with a
// boundary, a purpose field "batch" (its first 256 bytes, trimmed, as the
// handler reads it) and one file part of at most [fuzzMaxUpload] bytes, in
// either order. Fields of other names are ignored. Once the purpose has
// been read, the first file part completes the upload and what follows it
// is not parsed; a file part that comes first must be followed by the
// purpose and a well-formed end of the body.
func wellFormedUpload(contentType string, body []byte) (upload, bool) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return upload{}, false
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	purpose := ""
	var file *upload
	for {
		part, err := mr.NextPart()
		// Only a bare io.EOF is the closing delimiter; a body that ends
		// without one is an io.EOF wrapped in "multipart: NextPart".
		if err == io.EOF { //nolint:errorlint // see above
			break
		}
		if err != nil {
			return upload{}, false
		}
		switch part.FormName() {
		case "purpose":
			b, err := io.ReadAll(io.LimitReader(part, 256))
			if err != nil {
				return upload{}, false
			}
			if purpose = strings.TrimSpace(string(b)); purpose != openai.PurposeBatch {
				return upload{}, false
			}
		case "file":
			if file != nil {
				return upload{}, false
			}
			b, err := io.ReadAll(part)
			if err != nil || len(b) > fuzzMaxUpload {
				return upload{truncated: purpose != "" && errors.Is(err, io.ErrUnexpectedEOF)}, false
			}
			file = &upload{name: part.FileName(), content: b}
			if purpose != "" {
				return *file, true
			}
		default:
			_, _ = io.Copy(io.Discard, part)
		}
	}
	if file == nil || purpose == "" {
		return upload{}, false
	}
	return *file, true
}

// checkErrorBody fails unless rec holds an OpenAI error object in JSON.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("status %d: Content-Type %q: %s", rec.Code, ct, rec.Body.Bytes())
	}
	var e apiError
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("status %d: not an OpenAI error (%v): %s", rec.Code, err, rec.Body.Bytes())
	}
}

// jsonString returns s as it reads back from JSON, where invalid UTF-8
// becomes U+FFFD.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

type uploadSeed struct {
	contentType string
	body        []byte
}

// uploadSeeds returns valid uploads in both part orders and the edge cases
// around them.
func uploadSeeds(tb testing.TB) []uploadSeed {
	tb.Helper()
	ct := "multipart/form-data; boundary=" + fuzzBoundary
	const jsonl = `{"custom_id":"r1","method":"POST","url":"/v2/models/sum/infer","body":{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}}` + "\n"
	type part struct{ name, filename, content string }
	build := func(parts ...part) []byte {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		if err := mw.SetBoundary(fuzzBoundary); err != nil {
			tb.Fatal(err)
		}
		for _, p := range parts {
			var w io.Writer
			var err error
			if p.filename != "" {
				w, err = mw.CreateFormFile(p.name, p.filename)
			} else {
				w, err = mw.CreateFormField(p.name)
			}
			if err != nil {
				tb.Fatal(err)
			}
			_, _ = io.WriteString(w, p.content)
		}
		if err := mw.Close(); err != nil {
			tb.Fatal(err)
		}
		return buf.Bytes()
	}
	purpose := part{"purpose", "", "batch"}
	file := part{"file", "in.jsonl", jsonl}
	valid := build(purpose, file)
	return []uploadSeed{
		{ct, valid},
		{ct, build(file, purpose)}, // the SDKs' order
		{ct, build(part{"purpose", "", " batch\r\n"}, part{"file", "", jsonl}, part{"extra", "", "x"})},
		{ct, build(purpose, part{"file", "../../etc/passwd", ""})},
		{ct, build(file)},
		{ct, build(purpose)},
		{ct, build(part{"purpose", "", "fine-tune"}, file)},
		{ct, build(file, part{"file", "b.jsonl", jsonl}, purpose)},
		{ct, build(purpose, part{"file", "big.jsonl", strings.Repeat(jsonl, fuzzMaxUpload/len(jsonl)+1)})},
		{ct, build(part{"file", "big.jsonl", strings.Repeat(jsonl, fuzzMaxUpload/len(jsonl)+1)}, purpose)},
		{ct, valid[:len(valid)/2]}, // truncated
		{ct, bytes.ReplaceAll(valid, []byte("\r\n"), []byte("\n"))},
		{ct, []byte("--" + fuzzBoundary + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" + fuzzBoundary +
			"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jsonl\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{\"a\"=3D1}=\r\n\r\n--" + fuzzBoundary + "--\r\n")},
		{ct, nil},
		{"multipart/form-data", valid},
		{"multipart/mixed; boundary=" + fuzzBoundary, valid},
		{"application/json", []byte(`{"purpose":"batch"}`)},
		{"multipart/form-data; boundary=\"" + fuzzBoundary + "\"; charset=utf-8", valid},
	}
}
