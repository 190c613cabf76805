package loadgen

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/infergate/infergate"
)

// ClassResult reports one class's requests scheduled in the measured window.
type ClassResult struct {
	// Sent requests got a response or a transport error; Dropped ones were
	// scheduled but not sent because MaxInFlight was reached. OK is 200
	// responses; Rejected429 is 429 responses; Errors is every other status
	// plus transport errors and timeouts.
	Sent, OK, Rejected429, Errors, Dropped int
	// Latency quantiles over OK responses, measured from the scheduled send
	// time.
	P50, P95, P99, Max time.Duration
	// SLO is the class's latency objective; SLOAttainment is the fraction of
	// scheduled requests (Sent + Dropped) that got a 200 within it.
	SLO           time.Duration
	SLOAttainment float64
	// RetryAfterSeen reports whether any 429 carried a Retry-After header.
	RetryAfterSeen bool
}

// Result reports one Run.
type Result struct {
	// Rate is the target arrival rate (req/s); Duration the measured window.
	Rate     float64
	Duration time.Duration
	// ThroughputRPS is 200 responses completed within the measured window
	// (to any request, warmup ones included) per second of window: what
	// the server delivered, which stays at its capacity when the offered
	// rate exceeds it.
	ThroughputRPS float64
	// Totals over all classes (see ClassResult).
	Sent, OK, Rejected429, Errors, Dropped int
	// Latency quantiles over OK responses of every class.
	P50, P95, P99, Max time.Duration
	// ServerP50 and ServerP99 are quantiles of the server's own time for
	// the same responses (its X-Infergate-Server-Ms header): the latency
	// without the network and the client's side. Zero unless every OK
	// response carried the header.
	ServerP50, ServerP99 time.Duration
	// PathP50 and PathP99 are quantiles of each such response's latency
	// minus its server time: the client path (sending, the network, the
	// server's accept and read before its handler runs, its writing of the
	// answer, and the client reading it), measured per request. Latency
	// runs from the scheduled send time, so an open loop's own lateness in
	// sending is in it too.
	PathP50, PathP99 time.Duration
	// SLOAttainment is the fraction of all scheduled requests that got a 200
	// within their class's SLO.
	SLOAttainment float64
	// ByClass has an entry for every class in the mix.
	ByClass map[infergate.Class]*ClassResult
	// ClientCPUSeconds is the CPU time (user + system, from getrusage) this
	// process used from the start of the measured window until the last
	// request finished. When the server runs in the same process (an
	// in-process bench), it includes the server's CPU too.
	ClientCPUSeconds float64
	// StatusCounts counts responses by HTTP status; 0 counts transport
	// errors and timeouts. Dropped requests are not included.
	StatusCounts map[int]int
	// ServerStart and ServerEnd are Config.ServerStats at the start and the
	// end of the measured window, ServerDelta their difference; nil when
	// ServerStats is not set or failed.
	ServerStart, ServerEnd, ServerDelta map[string]float64
}

// FailureFraction is the fraction of scheduled requests that failed: non-200
// responses, transport errors and client drops. It is 1 if nothing was
// scheduled.
func (r *Result) FailureFraction() float64 {
	n := r.Sent + r.Dropped
	if n == 0 {
		return 1
	}
	return float64(n-r.OK) / float64(n)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fromMS(v float64) time.Duration { return time.Duration(math.Round(v * float64(time.Millisecond))) }

type classResultJSON struct {
	Sent           int     `json:"sent"`
	OK             int     `json:"ok"`
	Rejected429    int     `json:"rejected_429"`
	Errors         int     `json:"errors"`
	Dropped        int     `json:"dropped"`
	P50            float64 `json:"p50_ms"`
	P95            float64 `json:"p95_ms"`
	P99            float64 `json:"p99_ms"`
	Max            float64 `json:"max_ms"`
	SLO            float64 `json:"slo_ms"`
	SLOAttainment  float64 `json:"slo_attainment"`
	RetryAfterSeen bool    `json:"retry_after_seen"`
}

// MarshalJSON writes durations as float milliseconds (`p99_ms`).
func (c *ClassResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(classResultJSON{
		Sent: c.Sent, OK: c.OK, Rejected429: c.Rejected429, Errors: c.Errors, Dropped: c.Dropped,
		P50: ms(c.P50), P95: ms(c.P95), P99: ms(c.P99), Max: ms(c.Max), SLO: ms(c.SLO),
		SLOAttainment: c.SLOAttainment, RetryAfterSeen: c.RetryAfterSeen,
	})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (c *ClassResult) UnmarshalJSON(b []byte) error {
	var j classResultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = ClassResult{
		Sent: j.Sent, OK: j.OK, Rejected429: j.Rejected429, Errors: j.Errors, Dropped: j.Dropped,
		P50: fromMS(j.P50), P95: fromMS(j.P95), P99: fromMS(j.P99), Max: fromMS(j.Max), SLO: fromMS(j.SLO),
		SLOAttainment: j.SLOAttainment, RetryAfterSeen: j.RetryAfterSeen,
	}
	return nil
}

type resultJSON struct {
	Rate             float64                 `json:"rate"`
	Duration         float64                 `json:"duration_ms"`
	ThroughputRPS    float64                 `json:"throughput_rps"`
	Sent             int                     `json:"sent"`
	OK               int                     `json:"ok"`
	Rejected429      int                     `json:"rejected_429"`
	Errors           int                     `json:"errors"`
	Dropped          int                     `json:"dropped"`
	P50              float64                 `json:"p50_ms"`
	P95              float64                 `json:"p95_ms"`
	P99              float64                 `json:"p99_ms"`
	Max              float64                 `json:"max_ms"`
	ServerP50        float64                 `json:"server_p50_ms,omitempty"`
	ServerP99        float64                 `json:"server_p99_ms,omitempty"`
	PathP50          float64                 `json:"client_path_p50_ms,omitempty"`
	PathP99          float64                 `json:"client_path_p99_ms,omitempty"`
	SLOAttainment    float64                 `json:"slo_attainment"`
	ByClass          map[string]*ClassResult `json:"by_class"`
	ClientCPUSeconds float64                 `json:"client_cpu_seconds"`
	StatusCounts     map[int]int             `json:"status_counts"`
}

// MarshalJSON writes durations as float milliseconds and classes by name.
func (r *Result) MarshalJSON() ([]byte, error) {
	j := resultJSON{
		Rate: r.Rate, Duration: ms(r.Duration), ThroughputRPS: r.ThroughputRPS,
		Sent: r.Sent, OK: r.OK, Rejected429: r.Rejected429, Errors: r.Errors, Dropped: r.Dropped,
		P50: ms(r.P50), P95: ms(r.P95), P99: ms(r.P99), Max: ms(r.Max),
		ServerP50: ms(r.ServerP50), ServerP99: ms(r.ServerP99), PathP50: ms(r.PathP50), PathP99: ms(r.PathP99),
		SLOAttainment: r.SLOAttainment, ByClass: make(map[string]*ClassResult, len(r.ByClass)),
		ClientCPUSeconds: r.ClientCPUSeconds, StatusCounts: r.StatusCounts,
	}
	for c, cr := range r.ByClass {
		j.ByClass[c.String()] = cr
	}
	if j.StatusCounts == nil {
		j.StatusCounts = map[int]int{}
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Result) UnmarshalJSON(b []byte) error {
	var j resultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Result{
		Rate: j.Rate, Duration: fromMS(j.Duration), ThroughputRPS: j.ThroughputRPS,
		Sent: j.Sent, OK: j.OK, Rejected429: j.Rejected429, Errors: j.Errors, Dropped: j.Dropped,
		P50: fromMS(j.P50), P95: fromMS(j.P95), P99: fromMS(j.P99), Max: fromMS(j.Max),
		ServerP50: fromMS(j.ServerP50), ServerP99: fromMS(j.ServerP99), PathP50: fromMS(j.PathP50), PathP99: fromMS(j.PathP99),
		SLOAttainment: j.SLOAttainment, ByClass: make(map[infergate.Class]*ClassResult, len(j.ByClass)),
		ClientCPUSeconds: j.ClientCPUSeconds, StatusCounts: j.StatusCounts,
	}
	for name, cr := range j.ByClass {
		c, err := infergate.ParseClass(name)
		if err != nil {
			return err
		}
		r.ByClass[c] = cr
	}
	return nil
}

// Table formats the result as an aligned text table: a summary line, then
// one row per class and a total row.
func (r *Result) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rate %.1f req/s  window %.2fs  throughput %.1f req/s  p50 %.2fms  p95 %.2fms  p99 %.2fms  slo %.1f%%  client cpu %.2fs\n",
		r.Rate, r.Duration.Seconds(), r.ThroughputRPS, ms(r.P50), ms(r.P95), ms(r.P99), 100*r.SLOAttainment, r.ClientCPUSeconds)
	if r.ServerP99 > 0 {
		fmt.Fprintf(&b, "server side p50 %.2fms  p99 %.2fms  client path p50 %.2fms  p99 %.2fms\n",
			ms(r.ServerP50), ms(r.ServerP99), ms(r.PathP50), ms(r.PathP99))
	}
	const head = "%-8s %8s %8s %7s %7s %7s %9s %9s %9s %9s %8s %7s\n"
	const row = "%-8s %8d %8d %7d %7d %7d %9.2f %9.2f %9.2f %9.2f %8s %6.1f%%\n"
	fmt.Fprintf(&b, head, "class", "sent", "ok", "429", "errors", "dropped", "p50 ms", "p95 ms", "p99 ms", "max ms", "slo ms", "slo")
	for _, c := range infergate.Classes {
		cr, ok := r.ByClass[c]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, row, c.String(), cr.Sent, cr.OK, cr.Rejected429, cr.Errors, cr.Dropped,
			ms(cr.P50), ms(cr.P95), ms(cr.P99), ms(cr.Max), fmt.Sprintf("%.0f", ms(cr.SLO)), 100*cr.SLOAttainment)
	}
	fmt.Fprintf(&b, row, "all", r.Sent, r.OK, r.Rejected429, r.Errors, r.Dropped,
		ms(r.P50), ms(r.P95), ms(r.P99), ms(r.Max), "-", 100*r.SLOAttainment)
	return b.String()
}
