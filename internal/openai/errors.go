package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/infergate/infergate"
)

// OpenAI error types. OpenAI reports every client error, a 404 for an
// unknown file or batch included, as invalid_request_error; clients tell
// the cases apart by the HTTP status (the SDKs map it to NotFoundError,
// ConflictError, RateLimitError and so on), not by the type.
const (
	TypeInvalidRequest     = "invalid_request_error"
	TypeRateLimit          = "rate_limit_error"
	TypeServer             = "server_error"
	TypeServiceUnavailable = "service_unavailable_error"
)

// StatusAndType maps err to an HTTP status and an OpenAI error type through
// its infergate error code. The statuses are the ones the v2 API uses for
// the same codes (httpapi). An *http.MaxBytesError is a 413.
//
//	invalid 400, not_found 404, conflict 409, too_large 413,
//	unprocessable 422, canceled 499     invalid_request_error
//	overloaded 429                      rate_limit_error
//	unavailable 503                     service_unavailable_error
//	deadline 504, internal and others 500  server_error
func StatusAndType(err error) (int, string) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, TypeInvalidRequest
	}
	switch infergate.ErrorCode(err) {
	case infergate.EInvalid:
		return http.StatusBadRequest, TypeInvalidRequest
	case infergate.EUnauth:
		return http.StatusUnauthorized, TypeInvalidRequest
	case infergate.EForbidden:
		return http.StatusForbidden, TypeInvalidRequest
	case infergate.ENotFound:
		return http.StatusNotFound, TypeInvalidRequest
	case infergate.EConflict:
		return http.StatusConflict, TypeInvalidRequest
	case infergate.ETooLarge:
		return http.StatusRequestEntityTooLarge, TypeInvalidRequest
	case infergate.EUnsupported:
		return http.StatusUnsupportedMediaType, TypeInvalidRequest
	case infergate.EUnprocess:
		return http.StatusUnprocessableEntity, TypeInvalidRequest
	case infergate.ECanceled:
		return 499, TypeInvalidRequest // client closed request
	case infergate.EOverloaded:
		return http.StatusTooManyRequests, TypeRateLimit
	case infergate.EUnavailable:
		return http.StatusServiceUnavailable, TypeServiceUnavailable
	case infergate.EDeadline:
		return http.StatusGatewayTimeout, TypeServer
	}
	return http.StatusInternalServerError, TypeServer
}

// ErrorParam returns the parameter err is about (see ParamError), or "".
func ErrorParam(err error) string {
	var pe *ParamError
	if errors.As(err, &pe) {
		return pe.Param
	}
	return ""
}

// NewErrorResponse builds an error body. An empty param or code is null.
func NewErrorResponse(typ, code, param, msg string) ErrorResponse {
	return ErrorResponse{Error: ErrorObject{Message: msg, Type: typ, Param: String(param), Code: String(code)}}
}

// WriteError answers with status and an OpenAI error body,
// {"error":{"message","type","param","code"}}; an empty param or code is
// written as null.
func WriteError(w http.ResponseWriter, status int, typ, code, param, msg string) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(NewErrorResponse(typ, code, param, msg)) // cannot fail: strings only
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// WriteErrorFrom answers err: the status and type of StatusAndType, the
// infergate error code as code ("invalid", "not_found", ...), the
// parameter of ErrorParam and the user-facing message of
// infergate.ErrorMessage ("internal error" for anything that is not an
// *infergate.Error, so the caller should log 5xx errors itself). An
// overloaded error sets Retry-After.
func WriteErrorFrom(w http.ResponseWriter, err error) {
	status, typ := StatusAndType(err)
	code, msg := infergate.ErrorCode(err), infergate.ErrorMessage(err)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		code, msg = infergate.ETooLarge, "request body exceeds "+strconv.FormatInt(mbe.Limit, 10)+" bytes"
	}
	var e *infergate.Error
	if errors.As(err, &e) && e.Code == infergate.EOverloaded {
		w.Header().Set("Retry-After", strconv.Itoa(max(e.RetryAfterSeconds, 1)))
	}
	WriteError(w, status, typ, code, ErrorParam(err), msg)
}
