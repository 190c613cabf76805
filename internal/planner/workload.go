package planner

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The workload patterns.
const (
	PatternPoisson = "poisson"
	PatternBursty  = "bursty"
	PatternDiurnal = "diurnal"
	PatternTrace   = "trace"
)

// MaxArrivals bounds the arrivals a generated workload may have, so that a
// mistyped rate or duration fails instead of exhausting memory.
const MaxArrivals = 20_000_000

// The shape of the bursty pattern: calm periods at burstCalm x the mean
// rate alternate with bursts at burstPeak x. The share of time in bursts
// follows from them so that the mean is the workload's rate:
// calm (1-s) + peak s = 1.
const (
	burstCalm  = 0.5
	burstPeak  = 3.0
	burstShare = (1 - burstCalm) / (burstPeak - burstCalm) // 0.2

	// burstCycles is how many calm/burst cycles a workload spans, at
	// most maxBurstCycle each.
	burstCycles   = 10
	maxBurstCycle = 5 * time.Minute

	// diurnalSwing is the amplitude of the diurnal pattern: its rate
	// moves between (1-swing) and (1+swing) x the mean.
	diurnalSwing = 0.8
)

// Workload describes the arrivals to simulate.
type Workload struct {
	// Pattern is "poisson" (the default), "bursty", "diurnal" or "trace".
	Pattern string
	// Rate is the mean arrival rate in requests per second.
	Rate float64
	// Duration is the simulated span; not used for a trace.
	Duration time.Duration
	// Trace holds the arrival offsets of a "trace" workload, sorted (see
	// ParseTrace).
	Trace []time.Duration
	// Seed makes the generated arrivals reproducible.
	Seed uint64
}

// Arrivals returns the workload's arrival offsets from the start, sorted.
//
//   - poisson: a Poisson process at Rate.
//   - bursty: repeating cycles of a calm period at 0.5x Rate and a burst at
//     3x Rate that takes 20% of each cycle, so the mean is Rate. A workload
//     spans 10 cycles (cycles are at most 5 minutes; longer workloads have
//     more).
//   - diurnal: one sinusoidal period over Duration, from 0.2x Rate at the
//     start and end to 1.8x Rate in the middle.
//   - trace: a copy of Trace.
//
// Within each pattern arrivals are Poisson (a non-homogeneous Poisson
// process for bursty and diurnal).
func (w Workload) Arrivals() ([]time.Duration, error) {
	pattern := w.Pattern
	if pattern == "" {
		pattern = PatternPoisson
	}
	if pattern == PatternTrace {
		if len(w.Trace) == 0 {
			return nil, errors.New("trace workload has no arrivals")
		}
		for i, t := range w.Trace {
			if t < 0 {
				return nil, fmt.Errorf("trace arrival %d is negative (%s)", i, t)
			}
			if i > 0 && t < w.Trace[i-1] {
				return nil, fmt.Errorf("trace arrival %d (%s) is before arrival %d (%s); arrivals must be non-decreasing", i, t, i-1, w.Trace[i-1])
			}
		}
		return slices.Clone(w.Trace), nil
	}
	switch pattern {
	case PatternPoisson, PatternBursty, PatternDiurnal:
	default:
		return nil, fmt.Errorf("workload pattern %q: want poisson, bursty, diurnal or trace", w.Pattern)
	}
	if !(w.Rate > 0) || math.IsInf(w.Rate, 0) {
		return nil, fmt.Errorf("workload rate %v: want a positive number of requests per second", w.Rate)
	}
	if w.Duration <= 0 {
		return nil, fmt.Errorf("workload duration %s: want > 0", w.Duration)
	}
	expected := w.Rate * w.Duration.Seconds()
	if expected > MaxArrivals {
		return nil, fmt.Errorf("workload of %.0f req/s for %s has about %.3g arrivals, more than the %d a simulation takes; shorten the duration",
			w.Rate, w.Duration, expected, MaxArrivals)
	}
	g := generator{
		rng: rand.New(rand.NewPCG(w.Seed, w.Seed^0x9e3779b97f4a7c15)),
		end: float64(w.Duration),
		out: make([]time.Duration, 0, int(expected*1.1)+16),
	}
	rate := w.Rate / float64(time.Second) // per nanosecond
	switch pattern {
	case PatternPoisson:
		g.poisson(0, g.end, rate)
	case PatternBursty:
		cycle := min(float64(w.Duration)/burstCycles, float64(maxBurstCycle))
		for c := 0.0; c < g.end; c += cycle {
			calmEnd := c + cycle*(1-burstShare)
			g.poisson(c, min(calmEnd, g.end), rate*burstCalm)
			g.poisson(min(calmEnd, g.end), min(c+cycle, g.end), rate*burstPeak)
		}
	case PatternDiurnal:
		// Thinning: candidates at the peak rate, each kept with
		// probability rate(t)/peak.
		peak := rate * (1 + diurnalSwing)
		for t := g.rng.ExpFloat64() / peak; t < g.end; t += g.rng.ExpFloat64() / peak {
			r := rate * (1 - diurnalSwing*math.Cos(2*math.Pi*t/g.end))
			if g.rng.Float64()*peak < r {
				g.out = append(g.out, time.Duration(t))
			}
		}
	}
	return g.out, nil
}

type generator struct {
	rng *rand.Rand
	end float64
	out []time.Duration
}

// poisson appends the arrivals of a Poisson process of rate (per
// nanosecond) in [from, to). The process is memoryless, so restarting it at
// a segment boundary is exact.
func (g *generator) poisson(from, to, rate float64) {
	if rate <= 0 {
		return
	}
	for t := from + g.rng.ExpFloat64()/rate; t < to; t += g.rng.ExpFloat64() / rate {
		g.out = append(g.out, time.Duration(t))
	}
}

// maxTraceSeconds bounds trace timestamps so that nanosecond offsets fit in
// a time.Duration (year 2262).
const maxTraceSeconds = math.MaxInt64 / int64(time.Second)

// ParseTrace reads a request trace: one arrival per line, as Unix seconds
// (a decimal number, fractions allowed) or an RFC3339 time, or CSV (comma,
// semicolon or tab separated) whose first column is that. Blank lines and
// lines starting with # are skipped, and the first line may be a header (a
// first column starting with a letter). Arrivals must be non-decreasing;
// they are returned as offsets from the first. Errors name the line.
func ParseTrace(r io.Reader) ([]time.Duration, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	var (
		out       []time.Duration
		first     int64
		prev      int64
		prevLine  int
		prevField string
		line      int
		headerOK  = true
	)
	for sc.Scan() {
		line++
		text := sc.Text()
		if line == 1 {
			text = strings.TrimPrefix(text, "\uFEFF")
		}
		text = strings.TrimSpace(text)
		if text == "" || text[0] == '#' {
			continue
		}
		field := text
		if i := strings.IndexAny(text, ",;\t"); i >= 0 {
			field = text[:i]
		}
		field = strings.TrimSpace(field)
		if len(field) >= 2 && field[0] == '"' && field[len(field)-1] == '"' {
			field = strings.TrimSpace(field[1 : len(field)-1])
		}
		ns, err := parseTimestamp(field)
		if err != nil {
			if headerOK && startsWithLetter(field) {
				headerOK = false
				continue
			}
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
		headerOK = false
		if len(out) == 0 {
			first = ns
		} else if ns < prev {
			return nil, fmt.Errorf("trace line %d: arrival %q is before %q on line %d; arrivals must be non-decreasing",
				line, field, prevField, prevLine)
		}
		prev, prevLine, prevField = ns, line, field
		out = append(out, time.Duration(ns-first))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("trace line %d: %w", line+1, err)
	}
	if len(out) == 0 {
		return nil, errors.New("trace has no arrivals")
	}
	return out, nil
}

func startsWithLetter(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsLetter(r)
}

// parseTimestamp parses Unix seconds or an RFC3339 time into Unix
// nanoseconds.
func parseTimestamp(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty timestamp")
	}
	if ns, ok, err := parseDecimalSeconds(s); ok {
		return ns, err
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("timestamp %q is not a finite number", s)
		}
		if f < 0 || f >= float64(maxTraceSeconds) {
			return 0, fmt.Errorf("timestamp %q is out of range (0 to %d Unix seconds)", s, maxTraceSeconds)
		}
		return int64(math.Round(f * 1e9)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("cannot parse %q as Unix seconds or an RFC3339 time", s)
	}
	if sec := t.Unix(); sec < 0 || sec >= maxTraceSeconds {
		return 0, fmt.Errorf("timestamp %q is out of range (1970 to 2262)", s)
	}
	return t.UnixNano(), nil
}

// parseDecimalSeconds parses plain decimal seconds ("1712345678.123456")
// exactly to the nanosecond (digits beyond are truncated), which float64
// cannot do at Unix-epoch magnitudes. ok is false for anything else (a
// sign, an exponent), which the caller parses as a float.
func parseDecimalSeconds(s string) (ns int64, ok bool, err error) {
	intPart, frac, hasDot := strings.Cut(s, ".")
	if intPart == "" && frac == "" || !allDigits(intPart) || !allDigits(frac) {
		return 0, false, nil
	}
	var sec int64
	if intPart != "" {
		trimmed := strings.TrimLeft(intPart, "0")
		if len(trimmed) > 11 {
			return 0, true, fmt.Errorf("timestamp %q is out of range (0 to %d Unix seconds)", s, maxTraceSeconds)
		}
		sec, _ = strconv.ParseInt("0"+trimmed, 10, 64)
		if sec >= maxTraceSeconds {
			return 0, true, fmt.Errorf("timestamp %q is out of range (0 to %d Unix seconds)", s, maxTraceSeconds)
		}
	}
	var nanos int64
	if hasDot {
		digits := frac
		if len(digits) > 9 {
			digits = digits[:9]
		}
		digits += strings.Repeat("0", 9-len(digits))
		nanos, _ = strconv.ParseInt(digits, 10, 64)
	}
	return sec*int64(time.Second) + nanos, true, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
