package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/infergate/infergate"
)

// upstreamError is a failed upstream call: an HTTP status other than 200,
// or (status 0) a transport failure.
type upstreamError struct {
	url        string // redacted
	status     int
	msg        string        // the upstream's message
	retryAfter time.Duration // the Retry-After header, 0 if none
	err        error         // the transport failure
}

func (e *upstreamError) Error() string {
	if e.status == 0 {
		return fmt.Sprintf("upstream %s: %v", e.url, e.err)
	}
	return fmt.Sprintf("upstream %s: HTTP %d: %s", e.url, e.status, e.msg)
}

func (e *upstreamError) Unwrap() error { return e.err }

// retryable reports whether the failure may pass: the upstream is
// overloaded, restarting or unreachable. 502 is included because a
// gateway in front of the upstream answers it while the upstream
// restarts.
func (e *upstreamError) retryable() bool {
	switch e.status {
	case 0, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable:
		return true
	}
	return false
}

// mayRefuseBinary reports whether the failure may be an upstream's
// refusal of binary tensor data: an HTTP error that is neither transient
// nor about the model's existence or infergate's credentials.
func (e *upstreamError) mayRefuseBinary() bool {
	switch e.status {
	case 0, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return false
	}
	return !e.retryable()
}

// reason is the user-facing summary of the failure: the status and the
// upstream's message, or the kind of transport failure without addresses.
func (e *upstreamError) reason() string {
	if e.status != 0 {
		if e.msg == "" {
			return fmt.Sprintf("HTTP %d", e.status)
		}
		return fmt.Sprintf("HTTP %d: %s", e.status, e.msg)
	}
	var dnsErr *net.DNSError
	switch {
	case errors.Is(e.err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(e.err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(e.err, io.EOF), errors.Is(e.err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.As(e.err, &dnsErr):
		return "host not found"
	}
	return "network error"
}

// final is the *infergate.Error of a failure that is not (or no longer)
// retried; attempts is how many calls were made.
func (e *upstreamError) final(attempts int) *infergate.Error {
	code, msg := infergate.EInternal, ""
	switch s := e.status; {
	case e.retryable():
		code = infergate.EUnavailable
		msg = "upstream unavailable"
		if attempts > 1 {
			msg = fmt.Sprintf("upstream unavailable after %d attempts", attempts)
		}
	case s == http.StatusNotFound:
		code, msg = infergate.EUnavailable, "upstream model not found"
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		msg = "upstream refused infergate's credentials"
	case s >= 400 && s < 500:
		code, msg = infergate.EUnprocess, "upstream rejected the input"
	default:
		msg = "upstream failed"
	}
	return &infergate.Error{Code: code, Message: msg + ": " + e.reason(), Err: e}
}

// retry calls f until it succeeds, fails in a way that is not retryable,
// has been called attempts times (0: no limit), or ctx ends. Between
// calls it waits the backoff, or the upstream's Retry-After if longer; a
// wait that would pass ctx's deadline fails at once. The error is an
// *infergate.Error.
func retry[T any](ctx context.Context, r *Runtime, attempts int, what string, f func(context.Context) (T, error)) (T, error) {
	var zero T
	for n := 1; ; n++ {
		v, err := f(ctx)
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			return zero, ctxError(ctx, err, r.opt)
		}
		var ue *upstreamError
		if !errors.As(err, &ue) {
			return zero, err
		}
		if !ue.retryable() || (attempts > 0 && n >= attempts) {
			return zero, ue.final(n)
		}
		wait := r.backoff(n, ue.retryAfter)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			e := ue.final(n)
			e.Message += fmt.Sprintf(" (a retry in %s would pass the deadline)", wait.Round(time.Millisecond))
			return zero, e
		}
		r.log.Debug("retrying upstream call", "call", what, "attempt", n, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return zero, ctxError(ctx, err, r.opt)
		}
	}
}

// backoff is the wait before retry n (1-based): Backoff doubled n-1
// times, at most MaxBackoff, with equal jitter (half fixed, half random),
// or retryAfter when that is longer.
func (r *Runtime) backoff(n int, retryAfter time.Duration) time.Duration {
	d := r.opt.MaxBackoff
	if n-1 < 32 {
		if b := r.opt.Backoff << (n - 1); b > 0 && b < d {
			d = b
		}
	}
	d = d/2 + rand.N(d/2+1)
	return max(d, retryAfter)
}

// ctxError is the error of a call whose ctx ended: EDeadline for the
// runtime's own timeout or the caller's deadline, ECanceled otherwise.
func ctxError(ctx context.Context, last error, opt Options) error {
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errRunTimeout):
		return &infergate.Error{Code: infergate.EDeadline, Message: fmt.Sprintf("upstream did not answer within %s", opt.Timeout), Err: last}
	case errors.Is(cause, errOpenTimeout):
		return &infergate.Error{Code: infergate.EDeadline, Message: fmt.Sprintf("upstream did not answer within %s", opt.OpenTimeout), Err: last}
	case errors.Is(cause, context.DeadlineExceeded):
		return &infergate.Error{Code: infergate.EDeadline, Message: "deadline exceeded waiting for the upstream", Err: last}
	}
	return &infergate.Error{Code: infergate.ECanceled, Message: "upstream call canceled", Err: errors.Join(cause, last)}
}

// errorMessage extracts the upstream's message from an error body: the
// v2 {"error": "..."} object, else the start of the body as text.
func errorMessage(body []byte, status int) string {
	var v struct {
		Error *string `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil && v.Error != nil {
		if *v.Error == "" {
			return http.StatusText(status)
		}
		return truncate(*v.Error)
	}
	s := strings.TrimSpace(string(body))
	if s == "" || !utf8.ValidString(s) {
		return http.StatusText(status)
	}
	return truncate(s)
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date; 0 if absent or malformed. It is capped at an hour.
func parseRetryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil {
		d = time.Duration(min(max(n, 0), 3600)) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = time.Until(t)
	}
	return min(max(d, 0), time.Hour)
}
