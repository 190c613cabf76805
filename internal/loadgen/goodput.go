package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/infergate/infergate"
)

// ErrNoGoodput is returned by Goodput when not even the lowest rate meets
// the SLO.
var ErrNoGoodput = errors.New("loadgen: no rate in range meets the SLO")

// MaxFailureFraction is the largest fraction of failed requests (non-200,
// transport errors, client drops) a Goodput step may have and still pass.
const MaxFailureFraction = 0.01

// DefaultGoodputSteps is the number of step runs Goodput makes when steps
// is not positive.
const DefaultGoodputSteps = 8

// goodputTolerance stops the bisection once the passing and failing rates
// are this close, relative to the passing rate.
const goodputTolerance = 0.02

// MeetsSLO reports whether a Goodput step passes: at least one OK response,
// P99 over OK responses <= slo, and at most MaxFailureFraction of the
// scheduled requests failed (non-200, transport error or dropped by the
// client). With failures capped at 1%, this is close to requiring the P99
// over all scheduled requests, failures counted as infinitely slow, to be
// within slo.
func MeetsSLO(r *Result, slo time.Duration) bool {
	return r != nil && r.OK > 0 && r.P99 <= slo && r.FailureFraction() <= MaxFailureFraction
}

// Goodput finds the highest rate in [lo, hi] that meets slo (see MeetsSLO).
// It runs cfg at lo and doubles the rate (capped at hi) until a step fails
// after one has passed (failures before the first pass are scanned past),
// then bisects between the highest passing and that failing rate; each step is
// one Run of cfg.Warmup + cfg.Duration. It stops after steps runs (default
// 8) or once the bracket is within 2%.
//
// If cfg.SLO is empty, every class's SLO is set to slo, so the steps'
// SLOAttainment counts against it. Goodput returns the best passing result
// and every step in the order run; if no step passes it returns
// ErrNoGoodput with the steps.
func Goodput(ctx context.Context, cfg Config, lo, hi float64, slo time.Duration, steps int) (best *Result, tried []*Result, err error) {
	if !(lo > 0) || !(hi >= lo) {
		return nil, nil, fmt.Errorf("loadgen: goodput range [%v, %v]: want 0 < lo <= hi", lo, hi)
	}
	if slo <= 0 {
		return nil, nil, fmt.Errorf("loadgen: goodput slo must be > 0, got %v", slo)
	}
	if steps <= 0 {
		steps = DefaultGoodputSteps
	}
	if len(cfg.SLO) == 0 {
		cfg.SLO = make(map[infergate.Class]time.Duration, infergate.NumClasses)
		for _, c := range infergate.Classes {
			cfg.SLO[c] = slo
		}
	}
	step := func(rate float64) (bool, error) {
		c := cfg
		c.Rate = rate
		r, err := Run(ctx, c)
		if r != nil {
			tried = append(tried, r)
		}
		if err != nil {
			return false, err
		}
		ok := MeetsSLO(r, slo)
		if ok && (best == nil || r.Rate > best.Rate) {
			best = r
		}
		return ok, nil
	}

	// Doubling: find the first failing rate above a passing one. Rates
	// that fail before any pass are scanned past, because some policies
	// fail at low load and pass at high load (a size trigger waits for a
	// full batch, which comes sooner the higher the rate).
	pass, fail := 0.0, 0.0
	for rate := lo; len(tried) < steps; rate = min(2*rate, hi) {
		ok, err := step(rate)
		if err != nil {
			return best, tried, err
		}
		if ok {
			pass = rate
		} else if pass > 0 {
			fail = rate
			break
		}
		if rate >= hi {
			break
		}
	}
	if best == nil {
		return nil, tried, ErrNoGoodput
	}
	// Bisection between the highest pass and the lowest fail.
	for len(tried) < steps && fail > 0 && fail-pass > goodputTolerance*pass {
		mid := (pass + fail) / 2
		ok, err := step(mid)
		if err != nil {
			return best, tried, err
		}
		if ok {
			pass = mid
		} else {
			fail = mid
		}
	}
	return best, tried, nil
}
