// Package infergate holds the domain types shared by every part of the
// server: request classes and serving modes, tensors and their specs, and
// the error codes that the HTTP layer maps to status codes.
//
// Adapters (runtimes, stores, HTTP) live under internal/; wiring lives in
// cmd/infergate.
package infergate

import (
	"errors"
	"fmt"
	"strings"
)

// Class is a request's urgency. It selects the queue a request waits in and,
// through the class's policy, the serving mode.
type Class uint8

// The request classes, highest priority first.
const (
	ClassUrgent Class = iota
	ClassNormal
	ClassBulk
	NumClasses = 3
)

// Classes lists every class, highest priority first.
var Classes = [NumClasses]Class{ClassUrgent, ClassNormal, ClassBulk}

func (c Class) String() string {
	switch c {
	case ClassUrgent:
		return "urgent"
	case ClassNormal:
		return "normal"
	case ClassBulk:
		return "bulk"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// ParseClass parses "urgent", "normal" or "bulk" (case-insensitive). An empty
// string is ClassNormal.
func ParseClass(s string) (Class, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "urgent", "realtime", "high":
		return ClassUrgent, nil
	case "", "normal", "hybrid", "default":
		return ClassNormal, nil
	case "bulk", "batch", "low":
		return ClassBulk, nil
	}
	return ClassNormal, Errorf(EInvalid, "unknown class %q (want urgent, normal or bulk)", s)
}

// Mode is a serving mode.
type Mode string

// The serving modes.
const (
	ModeRealtime Mode = "realtime"
	ModeHybrid   Mode = "hybrid"
	ModeBatch    Mode = "batch"
)

// DefaultMode is the mode a class is served in unless configured otherwise.
func (c Class) DefaultMode() Mode {
	switch c {
	case ClassUrgent:
		return ModeRealtime
	case ClassBulk:
		return ModeBatch
	}
	return ModeHybrid
}

// DataType is a tensor element type, named as in the KServe v2 protocol.
type DataType string

// The v2 data types infergate supports.
const (
	BOOL   DataType = "BOOL"
	UINT8  DataType = "UINT8"
	UINT16 DataType = "UINT16"
	UINT32 DataType = "UINT32"
	UINT64 DataType = "UINT64"
	INT8   DataType = "INT8"
	INT16  DataType = "INT16"
	INT32  DataType = "INT32"
	INT64  DataType = "INT64"
	FP16   DataType = "FP16"
	FP32   DataType = "FP32"
	FP64   DataType = "FP64"
)

// Size is the element size in bytes, or 0 for an unknown type.
func (d DataType) Size() int {
	switch d {
	case BOOL, UINT8, INT8:
		return 1
	case UINT16, INT16, FP16:
		return 2
	case UINT32, INT32, FP32:
		return 4
	case UINT64, INT64, FP64:
		return 8
	}
	return 0
}

// Valid reports whether d is a supported type.
func (d DataType) Valid() bool { return d.Size() > 0 }

// Tensor is a dense, row-major tensor whose elements are stored as raw
// little-endian bytes. Keeping the bytes raw lets the binary protocol, batch
// concatenation and the runtimes share one representation without copies.
type Tensor struct {
	Name     string
	DataType DataType
	Shape    []int64
	Data     []byte
}

// NumElements is the product of the shape's dimensions.
func (t *Tensor) NumElements() int64 { return NumElements(t.Shape) }

// NumElements is the product of shape's dimensions (1 for a scalar).
func NumElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// TensorSpec describes a model input or output. A dimension of -1 is
// dynamic; the first dimension of a batchable model is the batch dimension.
type TensorSpec struct {
	Name     string   `json:"name"`
	DataType DataType `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// ModelInfo describes a served model.
type ModelInfo struct {
	Name     string       `json:"name"`
	Version  string       `json:"version,omitempty"`
	Platform string       `json:"platform"`
	Runtime  string       `json:"runtime"`
	Inputs   []TensorSpec `json:"inputs"`
	Outputs  []TensorSpec `json:"outputs"`
	// MaxBatchSize is the largest batch the scheduler forms; 0 means the
	// model has no batch dimension.
	MaxBatchSize int `json:"max_batch_size"`
}

// Error codes. They are part of the API: the HTTP layer maps each to one
// status code in one place.
const (
	EInvalid     = "invalid"       // 400: malformed or inconsistent input
	EUnauth      = "unauthorized"  // 401: missing or unknown API key
	EForbidden   = "forbidden"     // 403: the key's role may not do this
	ENotFound    = "not_found"     // 404: unknown model, file or job
	EConflict    = "conflict"      // 409: state conflict
	ETooLarge    = "too_large"     // 413: body or tensor too large
	EUnsupported = "unsupported"   // 415: a body encoding the server does not take
	EUnprocess   = "unprocessable" // 422: well-formed but cannot be served
	EOverloaded  = "overloaded"    // 429: queue full or shed; retry later
	EDeadline    = "deadline"      // 504: deadline passed before execution
	ECanceled    = "canceled"      // 499: client went away
	EUnavailable = "unavailable"   // 503: not ready, shutting down
	EInternal    = "internal"      // 500: a bug or runtime failure
)

// Error is an application error with a stable code and a message safe to
// show to users.
type Error struct {
	Code    string
	Message string
	// RetryAfterSeconds is set for EOverloaded.
	RetryAfterSeconds int
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, or
// EInternal.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the user-facing message of err: the message of an
// *Error, or "internal error" for anything else.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
