package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/infergate/infergate"
)

func TestStatusAndType(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
		typ    string
	}{
		{infergate.Errorf(infergate.EInvalid, "x"), 400, TypeInvalidRequest},
		{infergate.Errorf(infergate.ENotFound, "x"), 404, TypeInvalidRequest},
		{infergate.Errorf(infergate.EConflict, "x"), 409, TypeInvalidRequest},
		{infergate.Errorf(infergate.ETooLarge, "x"), 413, TypeInvalidRequest},
		{infergate.Errorf(infergate.EUnprocess, "x"), 422, TypeInvalidRequest},
		{infergate.Errorf(infergate.ECanceled, "x"), 499, TypeInvalidRequest},
		{infergate.Errorf(infergate.EOverloaded, "x"), 429, TypeRateLimit},
		{infergate.Errorf(infergate.EUnavailable, "x"), 503, TypeServiceUnavailable},
		{infergate.Errorf(infergate.EDeadline, "x"), 504, TypeServer},
		{infergate.Errorf(infergate.EInternal, "x"), 500, TypeServer},
		{errors.New("plain"), 500, TypeServer},
		{fmt.Errorf("wrapped: %w", infergate.Errorf(infergate.ENotFound, "x")), 404, TypeInvalidRequest},
		{&http.MaxBytesError{Limit: 10}, 413, TypeInvalidRequest},
	} {
		status, typ := StatusAndType(tt.err)
		if status != tt.status || typ != tt.typ {
			t.Errorf("%v: %d %s, want %d %s", tt.err, status, typ, tt.status, tt.typ)
		}
	}
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, http.StatusNotFound, TypeInvalidRequest, "", "", "No such File object: file-<x>")
	if rec.Code != 404 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
	}
	want := `{"error":{"message":"No such File object: file-<x>","type":"invalid_request_error","param":null,"code":null}}` + "\n"
	if rec.Body.String() != want {
		t.Errorf("body %s, want %s", rec.Body.String(), want)
	}
}

func TestWriteErrorFrom(t *testing.T) {
	type body struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	decode := func(rec *httptest.ResponseRecorder) body {
		var b body
		if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
			t.Fatal(err)
		}
		return b
	}

	rec := httptest.NewRecorder()
	r := CreateBatchRequest{InputFileID: "f", Endpoint: "/v2/models/m/infer", CompletionWindow: "2h"}
	WriteErrorFrom(rec, r.Validate(nil))
	b := decode(rec)
	if rec.Code != 400 || b.Error.Type != TypeInvalidRequest || b.Error.Param == nil || *b.Error.Param != "completion_window" ||
		b.Error.Code == nil || *b.Error.Code != "invalid" || b.Error.Message == "" {
		t.Errorf("validation error: %d %+v", rec.Code, b)
	}

	rec = httptest.NewRecorder()
	WriteErrorFrom(rec, &infergate.Error{Code: infergate.EOverloaded, Message: "queue full", RetryAfterSeconds: 3})
	b = decode(rec)
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "3" || b.Error.Type != TypeRateLimit || b.Error.Param != nil {
		t.Errorf("overloaded: %d %v %+v", rec.Code, rec.Header(), b)
	}

	rec = httptest.NewRecorder()
	WriteErrorFrom(rec, errors.New("secret detail"))
	b = decode(rec)
	if rec.Code != 500 || b.Error.Message != "internal error" || b.Error.Type != TypeServer {
		t.Errorf("internal: %d %+v", rec.Code, b)
	}

	rec = httptest.NewRecorder()
	WriteErrorFrom(rec, fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 1024}))
	b = decode(rec)
	if rec.Code != 413 || b.Error.Message != "request body exceeds 1024 bytes" || *b.Error.Code != infergate.ETooLarge {
		t.Errorf("too large: %d %+v", rec.Code, b)
	}
}
