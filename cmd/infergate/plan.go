package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/loadgen"
	"github.com/infergate/infergate/internal/perfmodel"
	"github.com/infergate/infergate/internal/planner"
	"github.com/infergate/infergate/internal/profile"
)

// runPlan predicts, by simulating the scheduler over a measured profile,
// what each mode and setting would do for a workload, and recommends one.
func runPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf serveFlags
	sf.register(fs)
	model := fs.String("model", "mlp", "model name")
	rate := fs.Float64("rate", 0, "mean arrival rate, requests/s (not with --trace)")
	pattern := fs.String("pattern", "poisson", "arrival pattern: poisson, bursty or diurnal")
	span := fs.Duration("duration", time.Minute, "simulated span of the pattern")
	tracePath := fs.String("trace", "", "arrival trace `file`: one timestamp per line (Unix seconds or RFC3339), or CSV with it first")
	sloMS := fs.Float64("slo-ms", 100, "p99 latency objective in ms (e.g. 10, or 21600000 for 6 hours)")
	sens := fs.String("cost-sensitivity", "medium", "low, medium or high")
	profilePath := fs.String("profile", "", "profile `file` written by 'infergate profile --json' (default: measure the model now)")
	maxInst := fs.Int("max-instances", planner.DefaultMaxInstances, "most instances a setting may use")
	asJSON := fs.Bool("json", false, "print JSON: candidates and recommendation")
	seed := fs.Uint64("seed", 1, "seed of arrivals and service times")
	svg := fs.String("svg", "", "plot the cheapest SLO-meeting cost per 1k of each mode against load (1/8x to 4x --rate) to `file` (SVG)")
	url := fs.String("url", "", "with --validate: a running server with the same configuration, instead of one in this process")
	validate := fs.Bool("validate", false, "replay Poisson loads at 25%, 50% and 80% of the measured hybrid capacity against a real server and compare with the prediction")
	replay := fs.Duration("validate-duration", 5*time.Second, "with --validate: how long each load is replayed (and simulated)")
	repeat := fs.Int("validate-repeat", 3, "with --validate: replays of each load (other arrivals each); the measured figures are their medians, since one stall of a shared machine moves one replay's p99 by a quarter")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *validate {
		if *replay < time.Second {
			return fmt.Errorf("--validate-duration must be at least 1s")
		}
		if *repeat < 1 {
			return fmt.Errorf("--validate-repeat must be at least 1")
		}
		return runPlanValidate(ctx, &sf, *url, *model, *seed, *replay, *repeat, *asJSON, stdout, stderr)
	}
	if (*rate <= 0) == (*tracePath == "") {
		return fmt.Errorf("give --rate > 0 or --trace FILE")
	}
	wl := planner.Workload{Pattern: *pattern, Rate: *rate, Duration: *span, Seed: *seed}
	if *tracePath != "" {
		f, err := os.Open(*tracePath)
		if err != nil {
			return err
		}
		tr, err := planner.ParseTrace(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--trace: %w", err)
		}
		wl = planner.Workload{Pattern: planner.PatternTrace, Trace: tr, Seed: *seed}
	}
	cfg, err := sf.load()
	if err != nil {
		return err
	}
	prof, source, err := loadOrMeasureProfile(ctx, &sf, cfg, *model, *profilePath, stderr)
	if err != nil {
		return err
	}
	slo := time.Duration(*sloMS * float64(time.Millisecond))
	plan, err := planner.MakePlan(ctx, planner.Request{Profile: prof, Workload: wl, SLO: slo, CostSensitivity: *sens,
		PricePerInstanceHour: cfg.PricePerInstanceHour, MaxInstances: *maxInst})
	if err != nil {
		return err
	}
	if *svg != "" {
		if wl.Pattern == planner.PatternTrace {
			return fmt.Errorf("--svg plots cost against a rate: give --rate, not --trace")
		}
		rates := []float64{}
		for _, f := range []float64{0.125, 0.25, 0.5, 1, 2, 4} {
			rates = append(rates, f**rate)
		}
		curves, err := planner.CostVsLoad(ctx, planner.Request{Profile: prof, Workload: wl, SLO: slo, CostSensitivity: *sens,
			PricePerInstanceHour: cfg.PricePerInstanceHour, MaxInstances: *maxInst}, rates)
		if err != nil {
			return err
		}
		f, err := os.Create(*svg)
		if err != nil {
			return err
		}
		err = planner.WriteCostSVG(f, fmt.Sprintf("%s, p99 SLO %s, %s arrivals (profile: %s)", *model, slo, wl.Pattern, source), rates, curves)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(planner.Report(plan, source, slo))
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "mode\tsettings\tp50_ms\tp99_ms\tslo_att\tutil\tcost/1k $\tcost/month $\tmeets SLO\t")
	for _, c := range plan.Candidates {
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%.4f\t%.2f\t%.7f\t%.2f\t%v\t\n", c.Settings.Mode, c.Settings, ms(c.P50), ms(c.P99), c.SLOAttainment,
			c.Utilization, c.CostPer1k, c.CostPerMonth, c.MeetsSLO)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	r := plan.Recommendation
	fmt.Fprintf(stdout, "\nrecommendation: %s (%s): p99 %.2f ms, $%.7f per 1k, $%.2f per month (profile: %s)\n", r.Mode, r.Settings, r.P99MS, r.CostPer1k,
		r.Result.CostPerMonth, source)
	for _, s := range r.Reasons {
		fmt.Fprintln(stdout, "  -", s)
	}
	return nil
}

// loadOrMeasureProfile reads a profile file written by 'infergate profile
// --json', or measures the model now (the configured instances and
// threads, one second per batch size). The planner takes the points of the
// model's configured execution configuration, or else of the configuration
// with the highest throughput.
func loadOrMeasureProfile(ctx context.Context, sf *serveFlags, cfg config.Config, name, path string, stderr io.Writer) (*planner.Profile, string, error) {
	log, err := newLogger(stderr, "warn")
	if err != nil {
		return nil, "", err
	}
	models, err := resolveModels(cfg, sf, log)
	if err != nil {
		return nil, "", err
	}
	m, err := findModel(models, name)
	if err != nil {
		return nil, "", err
	}
	var points []profile.Point
	source := path
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, "", err
		}
		var f struct {
			Points []profile.Point `json:"points"`
		}
		if err := json.Unmarshal(b, &f); err != nil || len(f.Points) == 0 {
			return nil, "", fmt.Errorf("--profile %s: not a profile written by 'infergate profile --json' (%v)", path, err)
		}
		points = f.Points
	} else {
		rt, err := openRuntime(cfg, log)
		if err != nil {
			return nil, "", err
		}
		fmt.Fprintf(stderr, "plan: measuring %s on %s (%dx%d) at batch sizes up to %d...\n", m.Name, rt.Name(), m.Instances, max(m.Threads, 1), m.MaxBatchSize)
		points, err = profile.Run(ctx, profile.Options{
			Open:    func(threads int) (backend.Session, error) { return rt.Open(m.Path, backend.Options{Threads: threads}) },
			Sizes:   profile.Sizes(m.MaxBatchSize, nil),
			Configs: []profile.Config{{Instances: m.Instances, Threads: max(m.Threads, 1)}}, Duration: time.Second,
			PricePerInstanceHour: cfg.PricePerInstanceHour,
		})
		if err != nil {
			return nil, "", err
		}
		source = fmt.Sprintf("measured now, %dx%d", m.Instances, max(m.Threads, 1))
	}
	return plannerProfile(name, points, profile.Config{Instances: m.Instances, Threads: max(m.Threads, 1)}), source, nil
}

// plannerProfile converts the points of one configuration (want, if the
// profile has it; else the one with the highest throughput).
func plannerProfile(model string, points []profile.Point, want profile.Config) *planner.Profile {
	have := false
	best, bestRate := profile.Config{}, -1.0
	for _, p := range points {
		have = have || p.Config() == want
		if p.ItemsPerSec > bestRate {
			best, bestRate = p.Config(), p.ItemsPerSec
		}
	}
	if !have {
		want = best
	}
	out := &planner.Profile{Model: model}
	for _, p := range points {
		if p.Config() == want {
			out.Points = append(out.Points, planner.Point{BatchSize: p.BatchSize, Instances: p.Instances, Threads: p.Threads,
				P50: msDur(p.P50MS), P99: msDur(p.P99MS), ItemsPerSec: p.ItemsPerSec, MemoryBytes: p.MemoryBytes})
		}
	}
	slices.SortFunc(out.Points, func(a, b planner.Point) int { return a.BatchSize - b.BatchSize })
	return out
}

func msDur(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// liveModel is GET /v1/models/{m}/profile: the server's live latency model.
type liveModel struct {
	Points   []perfmodel.Point  `json:"points"`
	Overhead perfmodel.Overhead `json:"overhead"`
	Dispatch perfmodel.Overhead `json:"dispatch"`
}

// runPlanValidate replays Poisson loads at 25%, 50% and 80% of the
// measured hybrid capacity against a real server (in this process, the
// default configuration) and compares each with the planner's prediction
// for the same arrivals and the server's settings (or a server at target,
// run with the same configuration), made twice: from a
// profile of the runtime alone, measured first, and from the server's own
// live latency model after its capacity run (batch latencies as they are
// while HTTP handling shares the cores).
func runPlanValidate(ctx context.Context, sf *serveFlags, target, model string, seed uint64, replay time.Duration, repeat int, asJSON bool, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, "warn")
	if err != nil {
		return err
	}
	cfg, err := sf.load()
	if err != nil {
		return err
	}
	cfg.Addr = "127.0.0.1:0"
	dir, err := os.MkdirTemp("", "infergate-plan-validate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.DataDir = dir
	rawProf, _, err := loadOrMeasureProfile(ctx, sf, cfg, model, "", stderr)
	if err != nil {
		return err
	}
	models, err := resolveModels(cfg, sf, log)
	if err != nil {
		return err
	}
	m, err := findModel(models, model)
	if err != nil {
		return err
	}
	rt, err := openRuntime(cfg, log)
	if err != nil {
		return err
	}
	url := target
	if url == "" {
		var stop func()
		if url, stop, err = startLocal(ctx, cfg, models, log, rt); err != nil {
			return err
		}
		defer stop()
	}
	pol := m.Policies()[1] // normal: what the load generator sends
	switch pol.Kind {
	case batching.Single, batching.Size, batching.Time, batching.Hybrid:
	default:
		return fmt.Errorf("plan --validate: the normal class's policy is %s; the planner simulates single, size, time and hybrid", pol.Kind)
	}
	settings := planner.Settings{Mode: planner.ModeHybrid, Policy: string(pol.Kind), MaxBatchSize: pol.MaxBatchSize,
		MaxQueueDelay: pol.MaxQueueDelay, BatchTimeout: pol.BatchTimeout, Instances: m.Instances}

	// Capacity: closed loop, 64 clients.
	capRes, err := runLoad(ctx, url, model, 0, 64, seed, capacityDuration)
	if err != nil {
		return err
	}
	capacity := capRes.ThroughputRPS
	fmt.Fprintf(stderr, "plan validate: hybrid capacity %.0f req/s (closed loop, 64 clients)\n", capacity)
	// The live model holds what the server has seen: after a capacity run,
	// batch sizes below the maximum were last measured in warmup, without
	// the contention of serving. A long-running server would have seen a
	// range of loads; a sweep (other arrivals than the ones replayed
	// below) gives it that. The request path's delays depend on the load
	// (at 90% the handler waits for CPU far more than at 10%), and the
	// live model keeps only the last requests' overhead and dispatch
	// delays; so each step's are read after it, with the client path the
	// load generator measured in it, and a replayed load is predicted with
	// the step nearest its rate.
	var steps []sweepStep
	for f := 0.1; f < 0.95; f += 0.1 {
		res, err := loadgen.Run(ctx, loadgen.Config{URL: url, Model: model, Rate: f * capacity, Duration: sweepStepDuration,
			Payload: "binary", Seed: seed + 1000})
		if err != nil {
			return err
		}
		live, err := fetchLive(ctx, url, model)
		if err != nil {
			return err
		}
		st := sweepStep{rate: f * capacity, overhead: live.Overhead, dispatch: live.Dispatch}
		st.path.P50, st.path.P99 = res.PathP50, res.PathP99
		steps = append(steps, st)
	}
	live, err := fetchLive(ctx, url, model)
	if err != nil {
		return err
	}
	liveProf := planner.FromLive(model, m.Instances, live.Points, live.Overhead, live.Dispatch)

	type row struct {
		Fraction, Rate                   float64
		MeasuredP50MS, LiveP50MS         float64
		MeasuredAvgBatch, LiveAvgBatch   float64
		MeasuredP99MS, MeasuredRPS       float64
		MeasuredServerP50MS              float64
		MeasuredServerP99MS              float64
		LiveServerP50MS, LiveServerP99MS float64
		ClientPathP50MS, ClientPathP99MS float64
		MeasuredCostPer1k                float64
		// MeasuredP99RunsMS: each replay's p99 (the measured figures are
		// the replays' medians).
		MeasuredP99RunsMS                 []float64
		RawP99MS, RawRPS, RawCostPer1k    float64
		LiveP99MS, LiveRPS, LiveCostPer1k float64
	}
	var rows []row
	for _, f := range []float64{0.25, 0.5, 0.8} {
		rate := f * capacity
		r := row{Fraction: f, Rate: rate}
		var p50, p99, rps, sp50, sp99, costs, batch []float64
		for k := range repeat {
			res, err := runLoad(ctx, url, model, rate, 0, seed+uint64(k), replay)
			if err != nil {
				return err
			}
			p50, p99, rps = append(p50, ms(res.P50)), append(p99, ms(res.P99)), append(rps, res.ThroughputRPS)
			sp50, sp99 = append(sp50, ms(res.ServerP50)), append(sp99, ms(res.ServerP99))
			if d := res.ServerDelta; d != nil && res.OK > 0 {
				costs = append(costs, d["provisioned_seconds"]*res.ServerEnd["price"]/3600/float64(res.OK)*1000)
				if d["batches"] > 0 {
					batch = append(batch, d["items"]/d["batches"])
				}
			}
		}
		r.MeasuredP99RunsMS = slices.Clone(p99)
		r.MeasuredP50MS, r.MeasuredP99MS, r.MeasuredRPS = median(p50), median(p99), median(rps)
		r.MeasuredServerP50MS, r.MeasuredServerP99MS = median(sp50), median(sp99)
		r.MeasuredCostPer1k, r.MeasuredAvgBatch = median(costs), median(batch)
		arr, err := planner.Workload{Pattern: planner.PatternPoisson, Rate: rate, Duration: replay, Seed: seed}.Arrivals()
		if err != nil {
			return err
		}
		slo := pol.DefaultTimeout
		pr := planner.Simulate(rawProf, arr, settings, slo, cfg.PricePerInstanceHour, seed)
		st := nearestStep(steps, rate)
		atLoad := planner.FromLive(model, m.Instances, live.Points, st.overhead, st.dispatch)
		ps := planner.Simulate(atLoad, arr, settings, slo, cfg.PricePerInstanceHour, seed)
		atLoad.ClientPath = st.path
		pl := planner.Simulate(atLoad, arr, settings, slo, cfg.PricePerInstanceHour, seed)
		r.RawP99MS, r.RawRPS, r.RawCostPer1k = ms(pr.P99), pr.ThroughputRPS, pr.CostPer1k
		r.LiveP99MS, r.LiveRPS, r.LiveCostPer1k = ms(pl.P99), pl.ThroughputRPS, pl.CostPer1k
		r.LiveP50MS = ms(pl.P50)
		r.LiveAvgBatch = pl.AvgBatch
		r.LiveServerP50MS, r.LiveServerP99MS = ms(ps.P50), ms(ps.P99)
		r.ClientPathP50MS, r.ClientPathP99MS = ms(st.path.P50), ms(st.path.P99)
		rows = append(rows, r)
		fmt.Fprintf(stderr, "plan validate: %.0f%% (%.0f req/s): measured p99 per replay %.2f ms; medians: p50 %.2f p99 %.2f ms (server side %.2f / %.2f), batch %.1f; predicted p99 %.2f (raw profile), p50 %.2f p99 %.2f (server side %.2f / %.2f, client path %.2f / %.2f) batch %.1f (live)\n",
			100*f, rate, r.MeasuredP99RunsMS, r.MeasuredP50MS, r.MeasuredP99MS, r.MeasuredServerP50MS, r.MeasuredServerP99MS, r.MeasuredAvgBatch, r.RawP99MS,
			r.LiveP50MS, r.LiveP99MS, r.LiveServerP50MS, r.LiveServerP99MS, r.ClientPathP50MS, r.ClientPathP99MS, r.LiveAvgBatch)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"capacity_rps": capacity, "settings": planner.SettingsJSON(settings), "rows": rows,
			"raw_profile": rawProf, "live_profile": liveProf})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "load\trate\tp99 measured\tp99 raw-profile\terr\tp99 live\terr\tserver p99 measured\tpredicted\terr\trps measured\trps predicted\terr\tcost/1k measured\tcost/1k predicted\terr\t")
	rel := func(p, m float64) string {
		if m == 0 {
			return "-"
		}
		return fmt.Sprintf("%+.1f%%", 100*(p-m)/m)
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%.0f%%\t%.0f\t%.2f\t%.2f\t%s\t%.2f\t%s\t%.2f\t%.2f\t%s\t%.0f\t%.0f\t%s\t%.7f\t%.7f\t%s\t\n", 100*r.Fraction, r.Rate,
			r.MeasuredP99MS, r.RawP99MS, rel(r.RawP99MS, r.MeasuredP99MS), r.LiveP99MS, rel(r.LiveP99MS, r.MeasuredP99MS),
			r.MeasuredServerP99MS, r.LiveServerP99MS, rel(r.LiveServerP99MS, r.MeasuredServerP99MS),
			r.MeasuredRPS, r.LiveRPS, rel(r.LiveRPS, r.MeasuredRPS), r.MeasuredCostPer1k, r.LiveCostPer1k, rel(r.LiveCostPer1k, r.MeasuredCostPer1k))
	}
	fmt.Fprintf(stdout, "capacity %.0f req/s; settings: %s\n", capacity, settings)
	return tw.Flush()
}

const (
	capacityDuration  = 5 * time.Second
	sweepStepDuration = 2 * time.Second
)

// sweepStep is what one step of the validation sweep measured: the
// request path's delays at that load.
type sweepStep struct {
	rate               float64
	overhead, dispatch perfmodel.Overhead
	path               struct{ P50, P99 time.Duration }
}

// median is the median of xs (the mean of the middle two for an even
// count; 0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := slices.Clone(xs)
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// nearestStep is the step whose rate is closest to rate.
func nearestStep(steps []sweepStep, rate float64) sweepStep {
	best := steps[0]
	for _, st := range steps[1:] {
		if math.Abs(st.rate-rate) < math.Abs(best.rate-rate) {
			best = st
		}
	}
	return best
}

// runLoad drives url with binary one-item requests: open loop at rate, or
// closed loop with concurrency clients.
func runLoad(ctx context.Context, url, model string, rate float64, concurrency int, seed uint64, d time.Duration) (*loadgen.Result, error) {
	return loadgen.Run(ctx, loadgen.Config{URL: url, Model: model, Rate: rate, Concurrency: concurrency, Duration: d,
		Warmup: time.Second, Payload: "binary", Seed: seed, ServerStats: serverStats(url, model)})
}

// fetchLive reads the server's live latency model.
func fetchLive(ctx context.Context, url, model string) (*liveModel, error) {
	var body liveModel
	if err := getJSON(ctx, url+"/v1/models/"+model+"/profile", &body); err != nil {
		return nil, err
	}
	if len(body.Points) == 0 {
		return nil, fmt.Errorf("the server's live latency model is empty")
	}
	return &body, nil
}
