package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate"
)

// knownEndpoint serves model "m" (any version "1" or none) and "resnet".
func knownEndpoint(ep string) bool {
	m, v, ok := ParseEndpoint(ep)
	return ok && (m == "m" || m == "resnet") && (v == "" || v == "1")
}

func metadata(n, keyLen, valLen int) map[string]string {
	md := make(map[string]string, n)
	for i := range n {
		k := fmt.Sprintf("k%02d", i)
		if keyLen > len(k) {
			k += strings.Repeat("x", keyLen-len(k))
		}
		md[k] = strings.Repeat("v", valLen)
	}
	return md
}

func TestCreateBatchRequestValidate(t *testing.T) {
	good := func() CreateBatchRequest {
		return CreateBatchRequest{InputFileID: "file-1", Endpoint: "/v2/models/m/infer", CompletionWindow: "24h"}
	}
	tests := []struct {
		name       string
		mod        func(r *CreateBatchRequest)
		noCallback bool   // Validate(nil) instead of Validate(knownEndpoint)
		param      string // "" for a valid request
		window     time.Duration
	}{
		{name: "good 24h", mod: func(r *CreateBatchRequest) {}, window: 24 * time.Hour},
		{name: "good 6h", mod: func(r *CreateBatchRequest) { r.CompletionWindow = "6h" }, window: 6 * time.Hour},
		{name: "good 1h", mod: func(r *CreateBatchRequest) { r.CompletionWindow = "1h" }, window: time.Hour},
		{name: "good versioned", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/m/versions/1/infer" }, window: 24 * time.Hour},
		{name: "good other model", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/resnet/infer" }, window: 24 * time.Hour},
		{name: "nil callback accepts any model", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/zzz/infer" }, noCallback: true, window: 24 * time.Hour},
		{name: "metadata at the limits", mod: func(r *CreateBatchRequest) { r.Metadata = metadata(16, 64, 512) }, window: 24 * time.Hour},
		{name: "metadata counts characters", mod: func(r *CreateBatchRequest) {
			r.Metadata = map[string]string{strings.Repeat("é", 64): strings.Repeat("日", 512)}
		}, window: 24 * time.Hour},
		{name: "empty metadata", mod: func(r *CreateBatchRequest) { r.Metadata = map[string]string{} }, window: 24 * time.Hour},

		{name: "no input file", mod: func(r *CreateBatchRequest) { r.InputFileID = "" }, param: "input_file_id"},
		{name: "no endpoint", mod: func(r *CreateBatchRequest) { r.Endpoint = "" }, param: "endpoint"},
		{name: "openai endpoint", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v1/chat/completions" }, param: "endpoint"},
		{name: "unknown model", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/nope/infer" }, param: "endpoint"},
		{name: "unknown version", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/m/versions/2/infer" }, param: "endpoint"},
		{name: "no model", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models//infer" }, param: "endpoint"},
		{name: "nested path", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/a/b/infer" }, param: "endpoint"},
		{name: "empty version", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/m/versions//infer" }, param: "endpoint"},
		{name: "query", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/m/infer?x=1" }, param: "endpoint"},
		{name: "escaped", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/m%2F/infer" }, param: "endpoint"},
		{name: "metadata endpoint", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/m" }, param: "endpoint"},
		{name: "trailing slash", mod: func(r *CreateBatchRequest) { r.Endpoint = "/v2/models/m/infer/" }, param: "endpoint"},
		{name: "no window", mod: func(r *CreateBatchRequest) { r.CompletionWindow = "" }, param: "completion_window"},
		{name: "2h window", mod: func(r *CreateBatchRequest) { r.CompletionWindow = "2h" }, param: "completion_window"},
		{name: "48h window", mod: func(r *CreateBatchRequest) { r.CompletionWindow = "48h" }, param: "completion_window"},
		{name: "24 hours spelled", mod: func(r *CreateBatchRequest) { r.CompletionWindow = "24H" }, param: "completion_window"},
		{name: "17 metadata pairs", mod: func(r *CreateBatchRequest) { r.Metadata = metadata(17, 3, 1) }, param: "metadata"},
		{name: "65-char key", mod: func(r *CreateBatchRequest) { r.Metadata = metadata(1, 65, 1) }, param: "metadata"},
		{name: "513-char value", mod: func(r *CreateBatchRequest) { r.Metadata = metadata(1, 3, 513) }, param: "metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.mod(&r)
			known := knownEndpoint
			if tt.noCallback {
				known = nil
			}
			err := r.Validate(known)
			if tt.param == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				w, err := r.Window()
				if err != nil || w != tt.window {
					t.Fatalf("Window = %v, %v; want %v", w, err, tt.window)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			ie, ok := err.(*infergate.Error)
			if !ok {
				t.Fatalf("error %T is not *infergate.Error", err)
			}
			if ie.Code != infergate.EInvalid {
				t.Errorf("code %q, want %q", ie.Code, infergate.EInvalid)
			}
			if !strings.HasPrefix(ie.Message, tt.param) {
				t.Errorf("message %q does not start with the field %q", ie.Message, tt.param)
			}
			if got := ErrorParam(err); got != tt.param {
				t.Errorf("ErrorParam = %q, want %q", got, tt.param)
			}
		})
	}
}

func TestValidateNamesTheSameKeyEveryTime(t *testing.T) {
	r := CreateBatchRequest{InputFileID: "f", Endpoint: "/v2/models/m/infer", CompletionWindow: "24h",
		Metadata: map[string]string{"b": strings.Repeat("v", 600), "a": strings.Repeat("v", 600), "c": strings.Repeat("v", 600)}}
	first := r.Validate(nil).Error()
	for range 20 {
		if got := r.Validate(nil).Error(); got != first {
			t.Fatalf("error changed: %q then %q", first, got)
		}
	}
	if !strings.Contains(first, `"a"`) {
		t.Errorf("error %q should name the first key in order, \"a\"", first)
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tt := range []struct {
		in, model, version string
		ok                 bool
	}{
		{"/v2/models/m/infer", "m", "", true},
		{"/v2/models/my-model_1.onnx/infer", "my-model_1.onnx", "", true},
		{"/v2/models/m/versions/3/infer", "m", "3", true},
		{"/v2/models/m/versions/infer", "m/versions", "", false},
		{"/v2/models/m/ready", "", "", false},
		{"v2/models/m/infer", "", "", false},
		{"/v2/models/m n/infer", "", "", false},
		{"/v2/models/m\x00/infer", "", "", false},
		{"/v2/models/\xff/infer", "", "", false},
		{"/v2/models/m#/infer", "", "", false},
		{"", "", "", false},
	} {
		m, v, ok := ParseEndpoint(tt.in)
		if ok != tt.ok || (ok && (m != tt.model || v != tt.version)) {
			t.Errorf("ParseEndpoint(%q) = %q, %q, %v; want %q, %q, %v", tt.in, m, v, ok, tt.model, tt.version, tt.ok)
		}
	}
}

func TestCreateBatchRequestJSON(t *testing.T) {
	var r CreateBatchRequest
	in := `{"input_file_id":"file-abc123","endpoint":"/v2/models/m/infer","completion_window":"24h","metadata":{"customer_id":"user_123456789","batch_description":"Nightly eval job"}}`
	if err := json.Unmarshal([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	want := CreateBatchRequest{InputFileID: "file-abc123", Endpoint: "/v2/models/m/infer", CompletionWindow: "24h",
		Metadata: map[string]string{"customer_id": "user_123456789", "batch_description": "Nightly eval job"}}
	if r.InputFileID != want.InputFileID || r.Endpoint != want.Endpoint || r.CompletionWindow != want.CompletionWindow ||
		len(r.Metadata) != 2 || r.Metadata["customer_id"] != "user_123456789" {
		t.Fatalf("decoded %+v", r)
	}
	if err := r.Validate(knownEndpoint); err != nil {
		t.Fatal(err)
	}
}

// golden marshals v and compares it with want, a compact JSON literal.
func golden(t *testing.T, v any, want string) {
	t.Helper()
	got, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("JSON mismatch\n got: %s\nwant: %s", got, want)
	}
}

func i64(v int64) *int64 { return &v }

func TestBatchObjectJSON(t *testing.T) {
	t.Run("validating", func(t *testing.T) {
		// The shape of OpenAI's create-batch example: every unset nullable
		// field is null, request_counts is all zeros.
		b := BatchObject{
			ID: "batch_abc123", Endpoint: "/v2/models/m/infer", InputFileID: "file-abc123",
			CompletionWindow: "24h", Status: StatusValidating, CreatedAt: 1711471533,
			Metadata: map[string]string{"customer_id": "user_123456789"},
		}
		golden(t, b, `{"id":"batch_abc123","object":"batch","endpoint":"/v2/models/m/infer","errors":null,`+
			`"input_file_id":"file-abc123","completion_window":"24h","status":"validating","output_file_id":null,`+
			`"error_file_id":null,"created_at":1711471533,"in_progress_at":null,"expires_at":null,"finalizing_at":null,`+
			`"completed_at":null,"failed_at":null,"expired_at":null,"cancelling_at":null,"cancelled_at":null,`+
			`"request_counts":{"total":0,"completed":0,"failed":0},"metadata":{"customer_id":"user_123456789"}}`)
	})
	t.Run("completed with extension", func(t *testing.T) {
		b := BatchObject{
			ID: "batch_abc123", Object: ObjectBatch, Endpoint: "/v2/models/m/infer", Model: "m",
			InputFileID: "file-abc123", CompletionWindow: "6h", Status: StatusCompleted,
			OutputFileID: String("file-out"), ErrorFileID: String("file-err"),
			CreatedAt: 1711471533, InProgressAt: i64(1711471538), ExpiresAt: i64(1711493133),
			FinalizingAt: i64(1711493100), CompletedAt: i64(1711493163),
			RequestCounts: RequestCounts{Total: 100, Completed: 95, Failed: 5},
			Infergate:     &BatchExtension{Progress: 1, ItemsPerSec: ptr(812.5), CostUSD: ptr(0.0125)},
		}
		golden(t, b, `{"id":"batch_abc123","object":"batch","endpoint":"/v2/models/m/infer","model":"m","errors":null,`+
			`"input_file_id":"file-abc123","completion_window":"6h","status":"completed","output_file_id":"file-out",`+
			`"error_file_id":"file-err","created_at":1711471533,"in_progress_at":1711471538,"expires_at":1711493133,`+
			`"finalizing_at":1711493100,"completed_at":1711493163,"failed_at":null,"expired_at":null,"cancelling_at":null,`+
			`"cancelled_at":null,"request_counts":{"total":100,"completed":95,"failed":5},"metadata":null,`+
			`"infergate":{"progress":1,"items_per_sec":812.5,"estimated_completion_at":null,"cost_usd":0.0125}}`)
	})
	t.Run("failed with errors", func(t *testing.T) {
		errs := NewBatchErrors([]LineError{
			{Line: 3, Code: CodeDuplicateCustomID, Param: "custom_id", Message: `custom_id "a" is already used on line 1`},
			{Code: CodeEmptyFile, Message: "the file has no requests"},
		})
		b := BatchObject{ID: "batch_1", Endpoint: "/v2/models/m/infer", InputFileID: "file-1", CompletionWindow: "24h",
			Status: StatusFailed, CreatedAt: 10, InProgressAt: nil, FailedAt: i64(11), Errors: errs,
			Infergate: &BatchExtension{EstimatedCompletionAt: i64(99)}}
		golden(t, b, `{"id":"batch_1","object":"batch","endpoint":"/v2/models/m/infer","errors":{"object":"list","data":[`+
			`{"code":"duplicate_custom_id","message":"custom_id \"a\" is already used on line 1","param":"custom_id","line":3},`+
			`{"code":"empty_file","message":"the file has no requests","param":null,"line":null}]},`+
			`"input_file_id":"file-1","completion_window":"24h","status":"failed","output_file_id":null,"error_file_id":null,`+
			`"created_at":10,"in_progress_at":null,"expires_at":null,"finalizing_at":null,"completed_at":null,"failed_at":11,`+
			`"expired_at":null,"cancelling_at":null,"cancelled_at":null,"request_counts":{"total":0,"completed":0,"failed":0},`+
			`"metadata":null,"infergate":{"progress":0,"items_per_sec":null,"estimated_completion_at":99}}`)
	})
	t.Run("round trip", func(t *testing.T) {
		b := BatchObject{ID: "batch_1", Endpoint: "/v2/models/m/infer", InputFileID: "f", CompletionWindow: "1h",
			Status: StatusCancelling, CreatedAt: 5, CancellingAt: i64(6), Metadata: map[string]string{"a": "b"},
			Errors: &BatchErrors{}, Infergate: &BatchExtension{Progress: 0.5}}
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		var back BatchObject
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		again, _ := json.Marshal(back)
		if string(again) != string(raw) {
			t.Errorf("round trip changed it\n%s\n%s", raw, again)
		}
		if back.Object != ObjectBatch || *back.CancellingAt != 6 || back.Errors == nil || back.Errors.Data == nil {
			t.Errorf("decoded %+v", back)
		}
	})
}

func TestUnixAndString(t *testing.T) {
	if Unix(time.Time{}) != nil || String("") != nil {
		t.Fatal("zero values must be nil")
	}
	if got := *Unix(time.Unix(1711471533, 999)); got != 1711471533 {
		t.Errorf("Unix = %d", got)
	}
	if got := *String("x"); got != "x" {
		t.Errorf("String = %q", got)
	}
}

func TestFileObjectJSON(t *testing.T) {
	f := FileObject{ID: "file-abc123", Bytes: 120000, CreatedAt: 1677610602, Filename: "requests.jsonl",
		Purpose: PurposeBatch, Status: FileStatusProcessed}
	golden(t, f, `{"id":"file-abc123","object":"file","bytes":120000,"created_at":1677610602,"expires_at":null,`+
		`"filename":"requests.jsonl","purpose":"batch","status":"processed","status_details":null}`)
	f.ExpiresAt, f.Purpose = i64(1680202602), PurposeBatchOutput
	golden(t, &f, `{"id":"file-abc123","object":"file","bytes":120000,"created_at":1677610602,"expires_at":1680202602,`+
		`"filename":"requests.jsonl","purpose":"batch_output","status":"processed","status_details":null}`)
}

func TestListResponseJSON(t *testing.T) {
	id := func(f *FileObject) string { return f.ID }
	golden(t, NewList([]FileObject(nil), id, false),
		`{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}`)
	golden(t, ListResponse[BatchObject]{},
		`{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}`)
	files := []FileObject{
		{ID: "file-1", Bytes: 1, CreatedAt: 2, Filename: "a.jsonl", Purpose: PurposeBatch, Status: FileStatusProcessed},
		{ID: "file-2", Bytes: 3, CreatedAt: 4, Filename: "b.jsonl", Purpose: PurposeBatchOutput, Status: FileStatusProcessed},
	}
	golden(t, NewList(files, id, true), `{"object":"list","data":[`+
		`{"id":"file-1","object":"file","bytes":1,"created_at":2,"expires_at":null,"filename":"a.jsonl","purpose":"batch","status":"processed","status_details":null},`+
		`{"id":"file-2","object":"file","bytes":3,"created_at":4,"expires_at":null,"filename":"b.jsonl","purpose":"batch_output","status":"processed","status_details":null}],`+
		`"first_id":"file-1","last_id":"file-2","has_more":true}`)
}

func TestBatchOutputLineJSON(t *testing.T) {
	ok := BatchOutputLine{ID: "batch_req_1", CustomID: "request-2", Response: &BatchResponse{
		StatusCode: 200, RequestID: "req_1",
		Body: json.RawMessage(`{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32","data":[0.5]}]}`)}}
	golden(t, ok, `{"id":"batch_req_1","custom_id":"request-2","response":{"status_code":200,"request_id":"req_1",`+
		`"body":{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32","data":[0.5]}]}},"error":null}`)
	httpErr := BatchOutputLine{ID: "batch_req_2", CustomID: "request-3", Response: &BatchResponse{
		StatusCode: 400, RequestID: "req_2", Body: mustJSON(t, NewErrorResponse(TypeInvalidRequest, "invalid", "", "bad input"))}}
	golden(t, httpErr, `{"id":"batch_req_2","custom_id":"request-3","response":{"status_code":400,"request_id":"req_2",`+
		`"body":{"error":{"message":"bad input","type":"invalid_request_error","param":null,"code":"invalid"}}},"error":null}`)
	failed := BatchOutputLine{ID: "batch_req_3", CustomID: "request-4", Error: &BatchLineError{Code: "batch_expired", Message: "This request could not be executed before the completion window expired."}}
	golden(t, failed, `{"id":"batch_req_3","custom_id":"request-4","response":null,"error":{"code":"batch_expired",`+
		`"message":"This request could not be executed before the completion window expired."}}`)
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestErrorResponseJSON(t *testing.T) {
	golden(t, NewErrorResponse(TypeInvalidRequest, "", "", "No such File object: file-x"),
		`{"error":{"message":"No such File object: file-x","type":"invalid_request_error","param":null,"code":null}}`)
	golden(t, NewErrorResponse(TypeRateLimit, "overloaded", "metadata", "m"),
		`{"error":{"message":"m","type":"rate_limit_error","param":"metadata","code":"overloaded"}}`)
}

func TestParamErrorChain(t *testing.T) {
	err := invalidParam("endpoint", "endpoint: bad")
	if !errors.Is(err, err.Err) || ErrorParam(fmt.Errorf("wrapped: %w", err)) != "endpoint" {
		t.Fatal("param not found through the chain")
	}
	if infergate.ErrorMessage(err) != "endpoint: bad" {
		t.Errorf("message %q", infergate.ErrorMessage(err))
	}
	if ErrorParam(errors.New("x")) != "" {
		t.Error("a plain error has no param")
	}
}

func TestClip(t *testing.T) {
	if got := clip("abc"); got != `"abc"` {
		t.Errorf("clip = %s", got)
	}
	long := strings.Repeat("é", 100)
	if got := clip(long); got != fmt.Sprintf("%q...", strings.Repeat("é", 64)) {
		t.Errorf("clip = %s", got)
	}
}

func ptr[T any](v T) *T { return &v }
