package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/loadgen"
)

type benchFlags struct {
	serve                       serveFlags
	model, policies, url        string
	jobProfile                  string
	rate                        float64
	duration, warmup            time.Duration
	jsonOut, goodput, raw       bool
	withRaw                     bool
	rateXRaw                    float64
	concurrency                 int
	sloMS                       float64
	batches                     string
	payload, mix, pattern       string
	maxQueueDelay, batchTimeout time.Duration
	policyMaxBatch, queueSize   int
	lo, hi                      float64
	steps                       int
	seed                        uint64
	job, interfBatch            int
	rateSet                     bool
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f benchFlags
	f.serve.register(fs)
	fs.StringVar(&f.model, "model", "mlp", "model name")
	fs.StringVar(&f.policies, "policy", "hybrid", "batching policy of the normal class: single, time, size, hybrid, adaptive, aimd, or a comma list to compare")
	fs.StringVar(&f.url, "url", "", "target a running server at this base URL instead of starting one in-process")
	fs.Float64Var(&f.rate, "rate", 200, "Poisson arrival rate, requests/s")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "measured window per run")
	fs.DurationVar(&f.warmup, "warmup", 2*time.Second, "unmeasured warmup before each run")
	fs.BoolVar(&f.jsonOut, "json", false, "print JSON")
	fs.BoolVar(&f.goodput, "goodput", false, "search the highest rate whose p99 meets --slo-ms")
	fs.BoolVar(&f.raw, "raw", false, "measure the runtime alone at --batch sizes (no server)")
	fs.BoolVar(&f.withRaw, "with-raw", false, "also measure the runtime alone at the policy's max batch, before the served run, and report the ratio")
	fs.Float64Var(&f.rateXRaw, "rate-x-raw", 0, "with --with-raw: offer this multiple of the measured raw throughput instead of --rate")
	fs.IntVar(&f.concurrency, "concurrency", 0, "closed loop: this many clients each send as soon as answered (saturation throughput); overrides --rate")
	fs.Float64Var(&f.sloMS, "slo-ms", 100, "latency SLO in ms (goodput, SLO attainment, request timeout)")
	fs.StringVar(&f.batches, "batch", "1,2,4,8,16,32,64", "batch size(s) for --raw, comma-separated")
	fs.StringVar(&f.payload, "payload", "binary", "tensor encoding: json or binary")
	fs.StringVar(&f.pattern, "pattern", "poisson", "arrival pattern: poisson; bursty (calm at --rate, a burst at 3x for the middle third, calm); or steps:F1,F2,... (equal phases at F1 x --rate, ...)")
	fs.StringVar(&f.mix, "mix", "", "class mix, e.g. urgent=0.1,normal=0.6,bulk=0.3 (default all normal)")
	fs.DurationVar(&f.maxQueueDelay, "max-queue-delay", 5*time.Millisecond, "hybrid and adaptive policies' max queue delay")
	fs.DurationVar(&f.batchTimeout, "batch-timeout", 5*time.Millisecond, "time policy's period")
	fs.IntVar(&f.policyMaxBatch, "policy-max-batch", 32, "max batch size of the normal class")
	fs.IntVar(&f.queueSize, "queue", 512, "max queue size of the normal class")
	fs.Float64Var(&f.lo, "lo", 50, "goodput search: lowest rate")
	fs.Float64Var(&f.hi, "hi", 20000, "goodput search: highest rate")
	fs.IntVar(&f.steps, "steps", 10, "goodput search: most runs per policy")
	fs.Uint64Var(&f.seed, "seed", 12345, "seed of arrivals and payloads")
	fs.IntVar(&f.job, "job", 0, "measure a batch job of this many items: alone against the raw runtime and the single policy, and with --rate > 0 against real-time traffic at that rate")
	fs.IntVar(&f.interfBatch, "interference", 0, "measure real-time batches of this size alone and beside idle-priority bulk work on the same cores (no server)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the bench process to `file`")
	fs.StringVar(&f.jobProfile, "job-cpuprofile", "", "with --job: write a CPU profile of the job alone's run phase (create returned to completion) to `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fs.Visit(func(fl *flag.Flag) { f.rateSet = f.rateSet || fl.Name == "rate" })
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	log, err := newLogger(stderr, f.serve.logLevel)
	if err != nil {
		return err
	}
	if f.serve.logLevel == "info" {
		// Keep the bench's own output readable; warnings still show.
		log, _ = newLogger(stderr, "warn")
	}
	if f.raw {
		return benchRaw(ctx, &f, stdout, log)
	}
	if f.job > 0 {
		return benchJob(ctx, &f, stdout, stderr, log)
	}
	if f.interfBatch > 0 {
		return benchInterference(ctx, &f, stdout, log)
	}
	var runs []map[string]any
	for _, p := range strings.Split(f.policies, ",") {
		out, err := benchPolicy(ctx, &f, batching.Kind(strings.TrimSpace(p)), stderr, log)
		if err != nil {
			return err
		}
		runs = append(runs, out)
	}
	return printRuns(stdout, &f, runs)
}

// benchPolicy runs one policy: optionally the raw measurement, then an
// in-process server (unless --url), then the load.
func benchPolicy(ctx context.Context, f *benchFlags, kind batching.Kind, stderr io.Writer, log *slog.Logger) (map[string]any, error) {
	slo := time.Duration(f.sloMS * float64(time.Millisecond))
	out := map[string]any{"policy": string(kind), "payload": f.payload, "slo_ms": f.sloMS}
	url, rate := f.url, f.rate
	cfg, err := f.serve.load()
	if err != nil {
		return nil, err
	}
	cfg.Addr = "127.0.0.1:0"
	var models []config.Model
	var target *config.Model
	var rt backend.Runtime
	if url == "" || f.withRaw {
		if models, err = resolveModels(cfg, &f.serve, log); err != nil {
			return nil, err
		}
		if target, err = findModel(models, f.model); err != nil {
			return nil, err
		}
		pol, err := benchPolicyConfig(kind, f, slo, target.MaxBatchSize)
		if err != nil {
			return nil, err
		}
		if target.Classes == nil {
			target.Classes = map[string]batching.Policy{}
		}
		target.Classes["normal"] = pol
		if err := target.Validate(); err != nil {
			return nil, err
		}
		if rt, err = openRuntime(cfg, log); err != nil {
			return nil, err
		}
		out["runtime"] = rt.Name()
		out["instances"], out["threads"] = target.Instances, target.Threads
	}
	if f.withRaw {
		// The runtime alone, before any server work, at the batch size the
		// served run forms at saturation.
		r, err := measureRaw(ctx, rt, target, target.Classes["normal"].MaxBatchSize, f.duration)
		if err != nil {
			return nil, err
		}
		out["raw_batch_size"] = r.BatchSize
		out["raw_items_per_sec"] = r.ItemsPerSec
		if f.rateXRaw > 0 {
			rate = f.rateXRaw * r.ItemsPerSec
		}
	}
	if url == "" {
		var stop func()
		if url, stop, err = startLocal(ctx, cfg, models, log, rt); err != nil {
			return nil, err
		}
		defer stop()
		out["server"] = "in-process"
	} else {
		out["server"] = url
	}
	mix, err := loadgen.ParseClassMix(f.mix)
	if err != nil {
		return nil, err
	}
	lcfg := loadgen.Config{URL: url, Model: f.model, Rate: rate, Pattern: f.pattern, Duration: f.duration, Warmup: f.warmup, Mix: mix,
		Payload: f.payload, Seed: f.seed, ServerStats: serverStats(url, f.model), Concurrency: f.concurrency}
	if f.concurrency > 0 {
		out["concurrency"] = f.concurrency
	}
	var res *loadgen.Result
	if f.goodput {
		best, tried, err := loadgen.Goodput(ctx, lcfg, f.lo, f.hi, slo, f.steps)
		var steps []map[string]any
		for _, t := range tried {
			steps = append(steps, map[string]any{"rate": t.Rate, "throughput_rps": t.ThroughputRPS, "p99_ms": ms(t.P99), "passed": loadgen.MeetsSLO(t, slo)})
			fmt.Fprintf(stderr, "goodput step: policy=%s rate=%.0f throughput=%.0f p99=%.1fms pass=%v\n", kind, t.Rate, t.ThroughputRPS, ms(t.P99), loadgen.MeetsSLO(t, slo))
		}
		out["steps"] = steps
		if err != nil {
			out["goodput_rps"] = 0.0
			out["error"] = err.Error()
			return out, nil
		}
		res = best
		out["goodput_rps"] = best.ThroughputRPS
		out["goodput_rate"] = best.Rate
	} else {
		res, err = loadgen.Run(ctx, lcfg)
		if err != nil {
			return nil, err
		}
	}
	addResult(out, res)
	if raw, ok := out["raw_items_per_sec"].(float64); ok && raw > 0 {
		out["served_vs_raw"] = res.ThroughputRPS / raw
	}
	return out, nil
}

// benchPolicyConfig is the normal class's policy for a bench run. Every
// policy gets the SLO as its request timeout, so that no request executes
// after it could still meet the SLO.
func benchPolicyConfig(kind batching.Kind, f *benchFlags, slo time.Duration, modelMax int) (batching.Policy, error) {
	p := batching.Policy{Kind: kind, MaxBatchSize: min(f.policyMaxBatch, modelMax), MaxQueueSize: f.queueSize, DefaultTimeout: slo,
		Mode: infergate.ModeHybrid}
	switch kind {
	case batching.Single:
		p.MaxBatchSize, p.Mode = 1, infergate.ModeRealtime
	case batching.Time:
		p.BatchTimeout = f.batchTimeout
	case batching.Hybrid, batching.Adaptive, batching.AIMD:
		p.MaxQueueDelay = f.maxQueueDelay
	case batching.Size:
	default:
		return p, fmt.Errorf("--policy %q: want single, time, size, hybrid, adaptive or aimd", kind)
	}
	return p, p.Validate(modelMax)
}

// serverStats reads the model's counters from the server's cost report;
// the load generator takes their difference over the measured window.
func serverStats(url, model string) func(context.Context) (map[string]float64, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	return func(ctx context.Context) (map[string]float64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/cost", nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var rep cost.Report
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			return nil, err
		}
		for _, m := range rep.Models {
			if m.Model == model {
				return map[string]float64{"busy_seconds": m.BusySeconds, "provisioned_seconds": m.ProvisionedSeconds,
					"batches": float64(m.Batches), "items": float64(m.Items), "instances": float64(m.Instances),
					"price": rep.PricePerInstanceHour}, nil
			}
		}
		return nil, fmt.Errorf("model %q not in the server's cost report", model)
	}
}

func ms(d time.Duration) float64 { return d.Seconds() * 1e3 }

// addResult adds a run's client and server figures to out. Server figures
// are differences of the server's counters over the measured window.
func addResult(out map[string]any, r *loadgen.Result) {
	out["rate"] = r.Rate
	out["duration_s"] = r.Duration.Seconds()
	out["throughput_rps"] = r.ThroughputRPS
	out["p50_ms"], out["p95_ms"], out["p99_ms"] = ms(r.P50), ms(r.P95), ms(r.P99)
	out["slo_attainment"] = r.SLOAttainment
	out["sent"], out["ok"], out["rejected_429"], out["errors"], out["dropped"] = r.Sent, r.OK, r.Rejected429, r.Errors, r.Dropped
	// CPU of this process over the run: the load generator alone with
	// --url, the generator and the server together in-process.
	out["process_cpu_seconds"] = r.ClientCPUSeconds
	if r.Duration > 0 {
		out["process_cpu_cores"] = r.ClientCPUSeconds / r.Duration.Seconds()
	}
	out["max_rss_mb"] = maxRSSMB()
	by := map[string]any{}
	for c, cr := range r.ByClass {
		by[c.String()] = map[string]any{"sent": cr.Sent, "ok": cr.OK, "rejected_429": cr.Rejected429, "errors": cr.Errors,
			"p50_ms": ms(cr.P50), "p99_ms": ms(cr.P99), "slo_attainment": cr.SLOAttainment, "retry_after_seen": cr.RetryAfterSeen}
	}
	out["by_class"] = by
	d := r.ServerDelta
	if d == nil {
		return
	}
	if d["batches"] > 0 {
		out["avg_batch_size"] = d["items"] / d["batches"]
	}
	if d["provisioned_seconds"] > 0 {
		out["utilization"] = d["busy_seconds"] / d["provisioned_seconds"]
	}
	price := r.ServerEnd["price"]
	if r.OK > 0 {
		// Fully loaded: the provisioned instance time of the window.
		out["cost_per_1k"] = d["provisioned_seconds"] * price / 3600 / float64(r.OK) * 1000
		// Busy only: the measured execution time of the batches.
		out["cost_per_1k_busy"] = d["busy_seconds"] * price / 3600 / float64(r.OK) * 1000
	}
}

func printRuns(w io.Writer, f *benchFlags, runs []map[string]any) error {
	if f.jsonOut {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if len(runs) == 1 {
			return enc.Encode(runs[0])
		}
		return enc.Encode(map[string]any{"runs": runs, "ratios": ratios(runs)})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\trate\tgoodput_rps\tthroughput_rps\tp50_ms\tp99_ms\tslo_att\tavg_batch\tutil\tcost/1k $\tcost/1k busy $\traw items/s\t")
	for _, r := range runs {
		fmt.Fprintf(tw, "%v\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r["policy"], num(r["rate"], 0), num(r["goodput_rps"], 0),
			num(r["throughput_rps"], 0), num(r["p50_ms"], 2), num(r["p99_ms"], 2), num(r["slo_attainment"], 4), num(r["avg_batch_size"], 1),
			num(r["utilization"], 2), num(r["cost_per_1k"], 6), num(r["cost_per_1k_busy"], 6), num(r["raw_items_per_sec"], 0))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for k, v := range ratios(runs) {
		fmt.Fprintf(w, "%s = %.3f\n", k, v)
	}
	return nil
}

// ratios compares every run against the first (the baseline of the same
// invocation).
func ratios(runs []map[string]any) map[string]float64 {
	out := map[string]float64{}
	if len(runs) < 2 {
		return out
	}
	base := runs[0]
	for _, r := range runs[1:] {
		for _, k := range []string{"goodput_rps", "throughput_rps", "cost_per_1k"} {
			a, ok1 := r[k].(float64)
			b, ok2 := base[k].(float64)
			if ok1 && ok2 && b > 0 {
				out[fmt.Sprintf("%s_%s_vs_%s", k, r["policy"], base["policy"])] = a / b
			}
		}
	}
	return out
}

func num(v any, prec int) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'f', prec, 64)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return "-"
}

// measureRaw measures the runtime alone at batch b: one session per model
// instance, each run back to back in its own goroutine, as the served
// configuration runs them. Items/s are summed over the instances; the
// latency quantiles are the first instance's.
func measureRaw(ctx context.Context, rt backend.Runtime, m *config.Model, b int, d time.Duration) (*loadgen.RawResult, error) {
	n := max(m.Instances, 1)
	sessions := make([]backend.Session, 0, n)
	defer func() {
		for _, s := range sessions {
			_ = s.Close()
		}
	}()
	for range n {
		sess, err := rt.Open(m.Path, backend.Options{Threads: m.Threads})
		if err != nil {
			return nil, err
		}
		sessions = append(sessions, sess)
	}
	results := make([]*loadgen.RawResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Go(func() { results[i], errs[i] = loadgen.Raw(ctx, s, b, d) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	total := *results[0]
	for _, r := range results[1:] {
		total.ItemsPerSec += r.ItemsPerSec
		total.Batches += r.Batches
	}
	return &total, nil
}

func benchRaw(ctx context.Context, f *benchFlags, stdout io.Writer, log *slog.Logger) error {
	_, target, rt, err := modelRuntime(&f.serve, f.model, log)
	if err != nil {
		return err
	}
	var results []map[string]any
	for _, s := range strings.Split(f.batches, ",") {
		b, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || b < 1 {
			return fmt.Errorf("--batch %q: want positive integers", f.batches)
		}
		r, err := measureRaw(ctx, rt, target, b, f.duration)
		if err != nil {
			return err
		}
		results = append(results, map[string]any{"runtime": rt.Name(), "batch_size": r.BatchSize, "batches": r.Batches,
			"items_per_sec": r.ItemsPerSec, "p50_ms": ms(r.P50), "p99_ms": ms(r.P99), "threads": target.Threads, "instances": target.Instances})
	}
	if f.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if len(results) == 1 {
			return enc.Encode(results[0])
		}
		return enc.Encode(map[string]any{"points": results})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "runtime\tbatch\titems/s\tp50_ms\tp99_ms\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%v\t%v\t%s\t%s\t%s\t\n", r["runtime"], r["batch_size"], num(r["items_per_sec"], 0), num(r["p50_ms"], 2), num(r["p99_ms"], 2))
	}
	return tw.Flush()
}
