// Package openai holds the wire format of infergate's OpenAI-compatible
// Batch and Files APIs: the batch and file objects, list responses, the
// create-batch request, the JSONL input and output lines, and the error
// body. It validates create-batch requests and batch input files; it does
// not store files or run batches.
//
// The shapes follow OpenAI's API reference (the openai-python types
// Batch, FileObject, BatchError, BatchRequestCounts, ErrorObject and the
// batch request input/output objects):
//
//   - Timestamps are Unix seconds. Nullable fields are always present and
//     written as null when unset, as OpenAI's own examples show
//     ("errors": null, "output_file_id": null, "in_progress_at": null, ...).
//   - Lists are {"object":"list","data":[...],"first_id","last_id",
//     "has_more"}; data is [] (never null) when empty and first_id/last_id
//     are null then.
//   - Errors are {"error":{"message","type","param","code"}} with param and
//     code null when not set.
//
// What differs from OpenAI:
//
//   - The endpoint of a batch and the url of its lines are infergate
//     endpoints, /v2/models/{model}/infer or
//     /v2/models/{model}/versions/{version}/infer, and each line's body is
//     a KServe v2 inference request.
//   - completion_window accepts "1h" and "6h" besides OpenAI's "24h".
//   - A batch object may carry one extra top-level key, "infergate", with
//     live progress, throughput, an estimated completion time and the cost
//     so far (BatchExtension). It is left out when nil. OpenAI clients
//     ignore unknown keys (the SDKs' models allow extra fields), so the
//     extension never breaks the shape of the fields they know.
//
// BatchObject, FileObject, BatchErrors and ListResponse have a MarshalJSON
// that fills in "object" (and [] for nil data); do not embed them in other
// structs, whose encoding that method would take over.
package openai

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/kserve"
)

// Object type names.
const (
	ObjectBatch = "batch"
	ObjectFile  = "file"
	ObjectList  = "list"
)

// Batch statuses, as OpenAI names them.
const (
	StatusValidating = "validating"
	StatusFailed     = "failed"
	StatusInProgress = "in_progress"
	StatusFinalizing = "finalizing"
	StatusCompleted  = "completed"
	StatusExpired    = "expired"
	StatusCancelling = "cancelling"
	StatusCancelled  = "cancelled"
)

// File purposes infergate uses: batch input files are uploaded with
// PurposeBatch, output and error files are written with PurposeBatchOutput.
const (
	PurposeBatch       = "batch"
	PurposeBatchOutput = "batch_output"
)

// File statuses. OpenAI marks the field deprecated but still sends it.
const (
	FileStatusUploaded  = "uploaded"
	FileStatusProcessed = "processed"
	FileStatusError     = "error"
)

// Metadata limits, from OpenAI's Metadata description: "Set of 16 key-value
// pairs ... Keys are strings with a maximum length of 64 characters. Values
// are strings with a maximum length of 512 characters." Lengths are counted
// in characters (runes).
const (
	MaxMetadataPairs    = 16
	MaxMetadataKeyLen   = 64
	MaxMetadataValueLen = 512
)

// FileObject is a file of the Files API.
type FileObject struct {
	ID        string `json:"id"`
	Object    string `json:"object"` // "file"; written as "file" when empty
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	// ExpiresAt is null for files that do not expire.
	ExpiresAt *int64 `json:"expires_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
	// StatusDetails is deprecated by OpenAI; null unless an error is
	// explained.
	StatusDetails *string `json:"status_details"`
}

// MarshalJSON writes the object with "object":"file" when Object is empty.
func (f FileObject) MarshalJSON() ([]byte, error) {
	type plain FileObject
	p := plain(f)
	if p.Object == "" {
		p.Object = ObjectFile
	}
	return json.Marshal(p)
}

// RequestCounts counts a batch's requests.
type RequestCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// BatchError is one entry of a batch's errors: a problem found while
// validating its input file. Param and Line are null when they do not
// apply.
type BatchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

// BatchErrors is a batch's "errors": {"object":"list","data":[...]}.
type BatchErrors struct {
	Object string       `json:"object"` // "list"; written as "list" when empty
	Data   []BatchError `json:"data"`
}

// MarshalJSON writes "object":"list" when Object is empty and data as []
// when nil.
func (e BatchErrors) MarshalJSON() ([]byte, error) {
	type plain BatchErrors
	p := plain(e)
	if p.Object == "" {
		p.Object = ObjectList
	}
	if p.Data == nil {
		p.Data = []BatchError{}
	}
	return json.Marshal(p)
}

// BatchExtension is infergate's addition to the batch object, under the
// top-level key "infergate".
type BatchExtension struct {
	// Progress is the finished fraction of requests (completed + failed
	// over total), from 0 to 1.
	Progress float64 `json:"progress"`
	// ItemsPerSec is the recent measured processing rate; null before
	// anything was measured.
	ItemsPerSec *float64 `json:"items_per_sec"`
	// EstimatedCompletionAt is when the batch should finish at the current
	// rate, in Unix seconds; null when unknown or finished.
	EstimatedCompletionAt *int64 `json:"estimated_completion_at"`
	// CostUSD is the cost of the work done so far: each attempt's share of
	// the measured busy time of the batches that ran it, at the instance
	// price, as the cost ledger charges it.
	CostUSD *float64 `json:"cost_usd,omitempty"`
}

// BatchObject is a batch of the Batch API.
type BatchObject struct {
	ID     string `json:"id"`
	Object string `json:"object"` // "batch"; written as "batch" when empty
	// Endpoint is the infergate endpoint every line targets.
	Endpoint string `json:"endpoint"`
	// Model is the model of Endpoint; OpenAI has it as an optional field.
	// Left out when empty.
	Model            string        `json:"model,omitempty"`
	Errors           *BatchErrors  `json:"errors"`
	InputFileID      string        `json:"input_file_id"`
	CompletionWindow string        `json:"completion_window"`
	Status           string        `json:"status"`
	OutputFileID     *string       `json:"output_file_id"`
	ErrorFileID      *string       `json:"error_file_id"`
	CreatedAt        int64         `json:"created_at"`
	InProgressAt     *int64        `json:"in_progress_at"`
	ExpiresAt        *int64        `json:"expires_at"`
	FinalizingAt     *int64        `json:"finalizing_at"`
	CompletedAt      *int64        `json:"completed_at"`
	FailedAt         *int64        `json:"failed_at"`
	ExpiredAt        *int64        `json:"expired_at"`
	CancellingAt     *int64        `json:"cancelling_at"`
	CancelledAt      *int64        `json:"cancelled_at"`
	RequestCounts    RequestCounts `json:"request_counts"`
	// Metadata is null when the batch was created without any.
	Metadata map[string]string `json:"metadata"`
	// Infergate is the extension; left out when nil.
	Infergate *BatchExtension `json:"infergate,omitempty"`
}

// MarshalJSON writes the object with "object":"batch" when Object is empty.
func (b BatchObject) MarshalJSON() ([]byte, error) {
	type plain BatchObject
	p := plain(b)
	if p.Object == "" {
		p.Object = ObjectBatch
	}
	return json.Marshal(p)
}

// Unix returns t as Unix seconds for a nullable timestamp field: nil for
// the zero time.
func Unix(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	s := t.Unix()
	return &s
}

// String returns a pointer to s for a nullable string field: nil for "".
func String(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// ListResponse is a page of a list endpoint.
type ListResponse[T any] struct {
	Object  string  `json:"object"` // "list"; written as "list" when empty
	Data    []T     `json:"data"`   // written as [] when nil
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// MarshalJSON writes "object":"list" when Object is empty and data as []
// when nil.
func (l ListResponse[T]) MarshalJSON() ([]byte, error) {
	type plain ListResponse[T]
	p := plain(l)
	if p.Object == "" {
		p.Object = ObjectList
	}
	if p.Data == nil {
		p.Data = []T{}
	}
	return json.Marshal(p)
}

// NewList builds a page from data, taking first_id and last_id from the
// first and last element through id.
func NewList[T any](data []T, id func(*T) string, hasMore bool) ListResponse[T] {
	l := ListResponse[T]{Object: ObjectList, Data: data, HasMore: hasMore}
	if l.Data == nil {
		l.Data = []T{}
	}
	if len(data) > 0 {
		first, last := id(&data[0]), id(&data[len(data)-1])
		l.FirstID, l.LastID = &first, &last
	}
	return l
}

// CreateBatchRequest is the body of POST /v1/batches.
type CreateBatchRequest struct {
	InputFileID      string            `json:"input_file_id"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata,omitempty"`
}

// completionWindows are the accepted completion windows: OpenAI's "24h"
// and infergate's shorter "6h" and "1h".
var completionWindows = map[string]time.Duration{
	"24h": 24 * time.Hour,
	"6h":  6 * time.Hour,
	"1h":  time.Hour,
}

// Window returns the completion window as a duration.
func (r *CreateBatchRequest) Window() (time.Duration, error) {
	if r.CompletionWindow == "" {
		return 0, invalidParam("completion_window", "completion_window is required (24h, 6h or 1h)")
	}
	d, ok := completionWindows[r.CompletionWindow]
	if !ok {
		return 0, invalidParam("completion_window", "completion_window: %s is not supported (want 24h, 6h or 1h)", clip(r.CompletionWindow))
	}
	return d, nil
}

// Validate checks the request. The endpoint must be an infergate infer
// endpoint (see ParseEndpoint) and, when knownEndpoint is not nil,
// knownEndpoint(endpoint) must report that it is served; knownEndpoint gets
// the endpoint as given, already checked to parse. Errors are
// *infergate.Error with code EInvalid, a message that starts with the
// field's name, and the field as the parameter ErrorParam returns.
func (r *CreateBatchRequest) Validate(knownEndpoint func(string) bool) error {
	if r.InputFileID == "" {
		return invalidParam("input_file_id", "input_file_id is required")
	}
	if r.Endpoint == "" {
		return invalidParam("endpoint", "endpoint is required (want /v2/models/{model}/infer)")
	}
	if _, _, ok := ParseEndpoint(r.Endpoint); !ok {
		return invalidParam("endpoint", "endpoint: %s is not an infergate endpoint (want /v2/models/{model}/infer or /v2/models/{model}/versions/{version}/infer)", clip(r.Endpoint))
	}
	if knownEndpoint != nil && !knownEndpoint(r.Endpoint) {
		return invalidParam("endpoint", "endpoint: %s is not served (unknown model or version)", clip(r.Endpoint))
	}
	if _, err := r.Window(); err != nil {
		return err
	}
	if len(r.Metadata) > MaxMetadataPairs {
		return invalidParam("metadata", "metadata has %d pairs (at most %d)", len(r.Metadata), MaxMetadataPairs)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Metadata)) { // sorted: the same error every time
		v := r.Metadata[k]
		if n := utf8.RuneCountInString(k); n > MaxMetadataKeyLen {
			return invalidParam("metadata", "metadata: key %s has %d characters (at most %d)", clip(k), n, MaxMetadataKeyLen)
		}
		if n := utf8.RuneCountInString(v); n > MaxMetadataValueLen {
			return invalidParam("metadata", "metadata[%s]: value has %d characters (at most %d)", clip(k), n, MaxMetadataValueLen)
		}
	}
	return nil
}

// ParseEndpoint parses an infergate infer endpoint,
// /v2/models/{model}/infer or /v2/models/{model}/versions/{version}/infer.
// The model and version must be non-empty and free of '/', '%', '?', '#',
// spaces and control characters, as model names in the configuration are;
// no query or escaping is accepted.
func ParseEndpoint(s string) (model, version string, ok bool) {
	rest, found := strings.CutPrefix(s, "/v2/models/")
	if !found {
		return "", "", false
	}
	rest, found = strings.CutSuffix(rest, "/infer")
	if !found {
		return "", "", false
	}
	model, version, versioned := strings.Cut(rest, "/versions/")
	if !validSegment(model) || (versioned && !validSegment(version)) {
		return "", "", false
	}
	return model, version, true
}

// validSegment reports whether s can be a model name or version in a path.
func validSegment(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c == 0x7f || c == '/' || c == '%' || c == '?' || c == '#' {
			return false
		}
	}
	return true
}

// BatchInputLine is one line of a batch input file.
type BatchInputLine struct {
	CustomID string `json:"custom_id"`
	Method   string `json:"method"`
	URL      string `json:"url"`
	// Body is the v2 inference request, as it appeared in the file.
	Body json.RawMessage `json:"body"`
	// Request is Body decoded, as ScanInput validated it; nil otherwise.
	Request *kserve.InferRequest `json:"-"`
}

// BatchResponse is the response part of an output line.
type BatchResponse struct {
	StatusCode int    `json:"status_code"`
	RequestID  string `json:"request_id"`
	// Body is the JSON response: a v2 inference response, or an error
	// body for a status code of 400 or more.
	Body json.RawMessage `json:"body"`
}

// BatchLineError is the error of an output line: a failure that is not an
// HTTP response (OpenAI: "For requests that failed with a non-HTTP error").
type BatchLineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// BatchOutputLine is one line of a batch's output or error file. Response
// and Error are null when not set.
type BatchOutputLine struct {
	ID       string          `json:"id"`
	CustomID string          `json:"custom_id"`
	Response *BatchResponse  `json:"response"`
	Error    *BatchLineError `json:"error"`
}

// ErrorObject is the error of an error body.
type ErrorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// ErrorResponse is an error body, {"error":{...}}.
type ErrorResponse struct {
	Error ErrorObject `json:"error"`
}

// ParamError names the request parameter an error is about. Errors from
// this package carry one as the Err of their *infergate.Error; ErrorParam
// finds it.
type ParamError struct{ Param string }

func (e *ParamError) Error() string { return "param " + e.Param }

// invalidParam returns an EInvalid error about param.
func invalidParam(param, format string, args ...any) *infergate.Error {
	return &infergate.Error{Code: infergate.EInvalid, Message: fmt.Sprintf(format, args...), Err: &ParamError{Param: param}}
}

// clip quotes s for a message, cut to at most 64 characters.
func clip(s string) string {
	const max = 64
	if utf8.RuneCountInString(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	n := 0
	for i := range s {
		if n == max {
			return fmt.Sprintf("%q...", s[:i])
		}
		n++
	}
	return fmt.Sprintf("%q", s)
}
