package httpapi

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/planner"
)

// planRequest is the body of POST /v1/plan.
type planRequest struct {
	Model    string `json:"model"`
	Workload struct {
		Rate      float64 `json:"rate"`
		Pattern   string  `json:"pattern"`
		DurationS float64 `json:"duration_s"`
		// TraceS are arrival times in seconds (any origin, non-decreasing).
		TraceS []float64 `json:"trace_s"`
		Seed   uint64    `json:"seed"`
	} `json:"workload"`
	SLOMS           float64 `json:"slo_ms"`
	CostSensitivity string  `json:"cost_sensitivity"`
	MaxInstances    int     `json:"max_instances"`
}

// maxPlanBody bounds a plan request (a trace of ~1M arrivals), and
// maxPlanArrivals the arrivals simulated for one: the planner runs on the
// serving machine.
const (
	maxPlanBody     = 32 << 20
	maxPlanArrivals = 1_000_000
)

// plan serves POST /v1/plan: the planner over the server's own live latency
// model of the model (batch latencies and per-request overhead measured
// while serving), at the configured instance price.
func (s *Server) plan(w http.ResponseWriter, r *http.Request) {
	if !s.planning.TryLock() {
		e := infergate.Errorf(infergate.EOverloaded, "another plan is being computed; one at a time")
		e.RetryAfterSeconds = 5
		writeError(w, s.log, e)
		return
	}
	defer s.planning.Unlock()
	var req planRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPlanBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, s.log, infergate.Errorf(infergate.ETooLarge, "plan request larger than %d bytes", maxPlanBody))
			return
		}
		writeError(w, s.log, infergate.Errorf(infergate.EInvalid, "malformed plan request: %v", err))
		return
	}
	m, err := s.eng.Model(req.Model)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	bad := func(format string, args ...any) {
		writeError(w, s.log, infergate.Errorf(infergate.EInvalid, format, args...))
	}
	wl := req.Workload
	if !(req.SLOMS > 0) || req.SLOMS > 30*24*3600*1e3 {
		bad("slo_ms: %v: want a positive number of milliseconds (at most 30 days)", req.SLOMS)
		return
	}
	switch req.CostSensitivity {
	case "", "low", "medium", "high":
	default:
		bad("cost_sensitivity: %q: want low, medium or high", req.CostSensitivity)
		return
	}
	if req.MaxInstances < 0 || req.MaxInstances > 64 {
		bad("max_instances: %d: want 1..64", req.MaxInstances)
		return
	}
	workload := planner.Workload{Pattern: wl.Pattern, Rate: wl.Rate, Duration: time.Duration(wl.DurationS * float64(time.Second)), Seed: wl.Seed}
	if workload.Pattern == "" {
		workload.Pattern = planner.PatternPoisson
	}
	if workload.Duration == 0 {
		workload.Duration = time.Minute
	}
	if len(wl.TraceS) > maxPlanArrivals {
		bad("workload.trace_s: %d arrivals, at most %d", len(wl.TraceS), maxPlanArrivals)
		return
	}
	if len(wl.TraceS) > 0 {
		tr := make([]time.Duration, len(wl.TraceS))
		for i, t := range wl.TraceS {
			if math.IsNaN(t) || math.IsInf(t, 0) || (i > 0 && t < wl.TraceS[i-1]) || math.Abs(t-wl.TraceS[0]) > 1e7 {
				bad("workload.trace_s[%d]: %v: want finite, non-decreasing seconds spanning at most 10^7 s", i, t)
				return
			}
			tr[i] = time.Duration((t - wl.TraceS[0]) * float64(time.Second))
		}
		workload = planner.Workload{Pattern: planner.PatternTrace, Trace: tr, Seed: wl.Seed}
	} else if !(wl.Rate > 0) || wl.Rate > 1e6 || workload.Duration < 0 || workload.Duration > 24*time.Hour ||
		wl.Rate*workload.Duration.Seconds() > maxPlanArrivals {
		bad("workload: give rate (0 < rate <= 10^6 req/s) with duration_s (at most 86400, and at most %d arrivals), or trace_s", maxPlanArrivals)
		return
	}
	if workload.Pattern != planner.PatternTrace {
		arr, err := workload.Arrivals()
		if err != nil || len(arr) < 2 {
			bad("workload: %v req/s for %v gives %d arrivals; give at least two", wl.Rate, workload.Duration, len(arr))
			return
		}
	} else if len(wl.TraceS) < 2 {
		bad("workload.trace_s: give at least two arrivals")
		return
	}
	lat := m.Sched.Latency()
	prof := planner.FromLive(m.Info.Name, m.Instances(), lat.Points(), lat.Overhead(), lat.Dispatch())
	if len(prof.Points) == 0 {
		writeError(w, s.log, infergate.Errorf(infergate.EUnprocess, "model %s has no measured batch latency yet", m.Info.Name))
		return
	}
	slo := time.Duration(req.SLOMS * float64(time.Millisecond))
	p, err := planner.MakePlan(r.Context(), planner.Request{Profile: prof, Workload: workload, SLO: slo, CostSensitivity: req.CostSensitivity,
		PricePerInstanceHour: s.eng.Ledger().PricePerHour(), MaxInstances: req.MaxInstances})
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		writeError(w, s.log, infergate.Errorf(infergate.EInvalid, "%v", err))
		return
	}
	writeJSON(w, 200, planner.Report(p, "live latency model of "+m.Info.Name, slo))
}
