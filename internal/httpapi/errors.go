package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/infergate/infergate"
)

// statusOf maps an error code to its HTTP status. It is the one place that
// does so.
func statusOf(code string) int {
	switch code {
	case infergate.EInvalid:
		return http.StatusBadRequest
	case infergate.EUnauth:
		return http.StatusUnauthorized
	case infergate.EForbidden:
		return http.StatusForbidden
	case infergate.ENotFound:
		return http.StatusNotFound
	case infergate.EConflict:
		return http.StatusConflict
	case infergate.ETooLarge:
		return http.StatusRequestEntityTooLarge
	case infergate.EUnsupported:
		return http.StatusUnsupportedMediaType
	case infergate.EUnprocess:
		return http.StatusUnprocessableEntity
	case infergate.EOverloaded:
		return http.StatusTooManyRequests
	case infergate.EDeadline:
		return http.StatusGatewayTimeout
	case infergate.ECanceled:
		return 499 // client closed request, as nginx and Ollama use
	case infergate.EUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// errorBody is the JSON error shape: the v2 protocol's {"error": "..."}
// plus a stable code.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// writeError answers err as JSON with its status. Internal errors are
// logged with their detail and shown to the client as "internal error".
func writeError(w http.ResponseWriter, log *slog.Logger, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		err = infergate.Errorf(infergate.ETooLarge, "request body exceeds %d bytes", mbe.Limit)
	}
	code := infergate.ErrorCode(err)
	status := statusOf(code)
	if status == http.StatusInternalServerError {
		log.Error("internal error", "err", err)
	}
	var e *infergate.Error
	if errors.As(err, &e) && e.Code == infergate.EOverloaded {
		w.Header().Set("Retry-After", strconv.Itoa(max(e.RetryAfterSeconds, 1)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: infergate.ErrorMessage(err), Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
