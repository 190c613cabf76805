package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/loadgen"
	"github.com/infergate/infergate/internal/openai"
)

// benchJob measures a batch job of --job items: the runtime alone at the
// bulk lane's batch size, the same kind of item sent one by one through
// the single policy (for the cost comparison), the job alone, and, with
// --rate, real-time traffic alone and then together with a second job.
// Every figure is measured in this invocation; ratios compare figures of
// the same invocation.
func benchJob(ctx context.Context, f *benchFlags, stdout, stderr io.Writer, log *slog.Logger) error {
	out := map[string]any{"job_items": f.job}
	dir, err := os.MkdirTemp("", "infergate-benchjob-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	cfg, err := f.serve.load()
	if err != nil {
		return err
	}
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	models, err := resolveModels(cfg, &f.serve, log)
	if err != nil {
		return err
	}
	target, err := findModel(models, f.model)
	if err != nil {
		return err
	}
	rt, err := openRuntime(cfg, log)
	if err != nil {
		return err
	}
	out["runtime"] = rt.Name()
	bulkMax := target.Policies()[infergate.ClassBulk].MaxBatchSize

	// 1. The runtime alone at the bulk batch size.
	raw, err := measureRaw(ctx, rt, target, bulkMax, f.duration)
	if err != nil {
		return err
	}
	out["raw_batch_size"], out["raw_items_per_sec"] = raw.BatchSize, raw.ItemsPerSec
	fmt.Fprintf(stderr, "raw: batch %d, %.0f items/s\n", raw.BatchSize, raw.ItemsPerSec)

	// 2. One by one through the single policy, in-process: its busy cost
	// per 1k from the ledger.
	sf := *f
	sf.url, sf.concurrency, sf.withRaw, sf.goodput, sf.mix = "", 1, false, false, ""
	sf.duration, sf.warmup = min(f.duration, 3*time.Second), time.Second
	single, err := benchPolicy(ctx, &sf, batching.Single, stderr, log)
	if err != nil {
		return fmt.Errorf("single baseline: %w", err)
	}
	out["single_cost_per_1k_busy"] = single["cost_per_1k_busy"]
	out["single_items_per_sec"] = single["throughput_rps"]
	fmt.Fprintf(stderr, "single (one by one): %.0f req/s, busy cost per 1k $%.7f\n", single["throughput_rps"], single["cost_per_1k_busy"])

	// The server under test.
	url := f.url
	if url == "" {
		var stop func()
		if url, stop, err = startLocal(ctx, cfg, models, log, rt); err != nil {
			return err
		}
		defer stop()
		out["server"] = "in-process"
	} else {
		out["server"] = url
	}
	c, err := newBatchClient(url)
	if err != nil {
		return err
	}
	input := filepath.Join(dir, "input.jsonl")
	size, err := writeJobFile(ctx, c, input, f.model, f.job, f.seed)
	if err != nil {
		return err
	}
	out["input_bytes"] = size

	// 3. The job alone.
	before, err := costReport(ctx, url)
	if err != nil {
		return err
	}
	stopProfile := func() {}
	alone, err := runJob(ctx, c, input, f.model, func(string) {
		var err error
		if stopProfile, err = startCPUProfile(f.jobProfile); err != nil {
			log.Warn("job profile not written", "err", err)
			stopProfile = func() {}
		}
	})
	stopProfile()
	if err != nil {
		return err
	}
	after, err := costReport(ctx, url)
	if err != nil {
		return err
	}
	out["alone"] = alone
	fmt.Fprintf(stderr, "job alone: upload %.2fs, create %.2fs, run %.2fs: %.0f items/s (%.0f from create)\n",
		alone.UploadS, alone.CreateS, alone.RunS, alone.ItemsPerSec, alone.ItemsPerSecFromCreate)
	out["job_vs_raw"] = alone.ItemsPerSec / raw.ItemsPerSec
	out["job_from_create_vs_raw"] = alone.ItemsPerSecFromCreate / raw.ItemsPerSec
	bulk := lineDelta(before, after, f.model, "bulk")
	if bulk.Items > 0 {
		perK := bulk.BusySeconds * after.PricePerInstanceHour / 3600 / float64(bulk.Items) * 1000
		out["job_cost_per_1k_busy"] = perK
		// The batch's own cost (each item's share of its batches' busy
		// time) against the ledger's bulk line over the same run.
		out["job_batch_cost_usd"] = alone.CostUSD
		out["job_ledger_bulk_cost_usd"] = bulk.BusySeconds * after.PricePerInstanceHour / 3600
		out["job_avg_batch"] = float64(bulk.Items) / float64(max(bulk.Batches, 1))
		if s, ok := single["cost_per_1k_busy"].(float64); ok && s > 0 {
			out["job_cost_vs_single"] = perK / s
		}
	}

	// 4. Real-time traffic alone, then with a job running.
	if f.rateSet && f.rate > 0 {
		if err := benchOverlap(ctx, f, c, url, input, out, stderr); err != nil {
			return err
		}
	}
	return printJob(stdout, f.jsonOut, out)
}

// benchOverlap measures real-time traffic at f.rate alone and then while a
// job runs, and the job's throughput during the overlap against the spare
// capacity the real-time traffic left.
func benchOverlap(ctx context.Context, f *benchFlags, c *batchClient, url, input string, out map[string]any, stderr io.Writer) error {
	mix, err := loadgen.ParseClassMix(f.mix)
	if err != nil {
		return err
	}
	// stats reads, at the start and end of each measured window, the
	// real-time busy seconds from the ledger and the job's finished items.
	var jobID string
	stats := func(ctx context.Context) (map[string]float64, error) {
		rep, err := costReport(ctx, url)
		if err != nil {
			return nil, err
		}
		m := map[string]float64{}
		for _, mr := range rep.Models {
			if mr.Model == f.model {
				m["instances"] = float64(mr.Instances)
			}
		}
		for _, l := range rep.Lines {
			if l.Model == f.model && (l.Class == "urgent" || l.Class == "normal") {
				m["rt_busy_seconds"] += l.BusySeconds
			}
		}
		if jobID != "" {
			b, err := c.getBatch(ctx, jobID)
			if err != nil {
				return nil, err
			}
			m["job_done"] = float64(b.RequestCounts.Completed + b.RequestCounts.Failed)
			if batchTerminal(b.Status) {
				m["job_ended"] = 1
			}
		}
		return m, nil
	}
	lcfg := loadgen.Config{URL: url, Model: f.model, Rate: f.rate, Duration: f.duration, Warmup: f.warmup, Mix: mix,
		Payload: f.payload, Seed: f.seed, ServerStats: stats}
	rtAlone, err := loadgen.Run(ctx, lcfg)
	if err != nil {
		return err
	}
	busyFrac := 0.0
	if n := rtAlone.ServerEnd["instances"]; n > 0 {
		busyFrac = min(1, rtAlone.ServerDelta["rt_busy_seconds"]/(rtAlone.Duration.Seconds()*n))
	}
	out["rt_alone"] = overlapFigures(rtAlone)
	out["rt_busy_fraction"] = busyFrac
	fmt.Fprintf(stderr, "real-time alone at %.0f req/s: p50 %.1f ms, p99 %.1f ms, busy fraction %.2f\n", f.rate, ms(rtAlone.P50), ms(rtAlone.P99), busyFrac)

	// The job: uploaded and created first, so that the measured window
	// holds only execution.
	fo, err := c.upload(ctx, input)
	if err != nil {
		return err
	}
	b, err := c.createBatch(ctx, openai.CreateBatchRequest{InputFileID: fo.ID, Endpoint: "/v2/models/" + f.model + "/infer", CompletionWindow: "24h"}, "")
	if err != nil {
		return err
	}
	jobID = b.ID
	// Wait until the job is running.
	for b.RequestCounts.Completed == 0 && !batchTerminal(b.Status) {
		time.Sleep(20 * time.Millisecond)
		if b, err = c.getBatch(ctx, jobID); err != nil {
			return err
		}
	}
	withJob, err := loadgen.Run(ctx, lcfg)
	if err != nil {
		return err
	}
	if withJob.ServerEnd["job_ended"] > 0 {
		return fmt.Errorf("the job ended before the measured window did: use a larger --job or a shorter --duration")
	}
	jobRate := withJob.ServerDelta["job_done"] / withJob.Duration.Seconds()
	out["rt_with_job"] = overlapFigures(withJob)
	out["job_items_per_sec_during_rt"] = jobRate
	if rtAlone.P99 > 0 {
		out["rt_p99_with_job_vs_alone"] = float64(withJob.P99) / float64(rtAlone.P99)
	}
	if a, ok := out["alone"].(*jobFigures); ok && a.ItemsPerSec > 0 {
		spare := a.ItemsPerSec * (1 - busyFrac)
		out["spare_items_per_sec"] = spare
		out["job_share_of_spare"] = jobRate / spare
	}
	fmt.Fprintf(stderr, "real-time with the job: p50 %.1f ms, p99 %.1f ms; job %.0f items/s during the window\n", ms(withJob.P50), ms(withJob.P99), jobRate)
	// Let the job finish before the server closes.
	for !batchTerminal(b.Status) {
		time.Sleep(50 * time.Millisecond)
		if b, err = c.getBatch(ctx, jobID); err != nil {
			return err
		}
	}
	return nil
}

func overlapFigures(r *loadgen.Result) map[string]any {
	return map[string]any{"rate": r.Rate, "throughput_rps": r.ThroughputRPS, "p50_ms": ms(r.P50), "p99_ms": ms(r.P99),
		"ok": r.OK, "rejected_429": r.Rejected429, "errors": r.Errors, "slo_attainment": r.SLOAttainment}
}

// jobFigures are one job's measured timings.
type jobFigures struct {
	Items                 int64   `json:"items"`
	Completed             int64   `json:"completed"`
	Failed                int64   `json:"failed"`
	UploadS               float64 `json:"upload_s"`
	CreateS               float64 `json:"create_s"` // validation and item insert
	RunS                  float64 `json:"run_s"`    // create answered to completed seen
	ItemsPerSec           float64 `json:"items_per_sec"`
	ItemsPerSecFromCreate float64 `json:"items_per_sec_from_create"`
	Status                string  `json:"status"`
	// RunCores is the CPU this process used during the run, in cores
	// (with an in-process server: the server's).
	RunCores float64 `json:"run_process_cores"`
	// CostUSD is the batch object's cost_usd at the end.
	CostUSD float64 `json:"cost_usd"`
}

// runJob uploads input, creates a batch and polls it every 20 ms until it
// ends. onRunning, if set, is called once the batch is in progress.
func runJob(ctx context.Context, c *batchClient, input, model string, onRunning func(id string)) (*jobFigures, error) {
	t0 := time.Now()
	fo, err := c.upload(ctx, input)
	if err != nil {
		return nil, err
	}
	t1 := time.Now()
	b, err := c.createBatch(ctx, openai.CreateBatchRequest{InputFileID: fo.ID, Endpoint: "/v2/models/" + model + "/infer", CompletionWindow: "24h"}, "")
	if err != nil {
		return nil, err
	}
	t2 := time.Now()
	cpu0 := loadgen.ProcessCPUSeconds()
	if onRunning != nil {
		onRunning(b.ID)
	}
	for !batchTerminal(b.Status) {
		time.Sleep(20 * time.Millisecond)
		if b, err = c.getBatch(ctx, b.ID); err != nil {
			return nil, err
		}
	}
	t3 := time.Now()
	cpu1 := loadgen.ProcessCPUSeconds()
	fig := &jobFigures{RunCores: (cpu1 - cpu0) / t3.Sub(t2).Seconds(), Items: int64(b.RequestCounts.Total), Completed: int64(b.RequestCounts.Completed), Failed: int64(b.RequestCounts.Failed),
		UploadS: t1.Sub(t0).Seconds(), CreateS: t2.Sub(t1).Seconds(), RunS: t3.Sub(t2).Seconds(), Status: b.Status}
	if b.Status != openai.StatusCompleted || fig.Completed != fig.Items {
		return fig, fmt.Errorf("job %s ended %s with %d of %d items completed", b.ID, b.Status, fig.Completed, fig.Items)
	}
	if b.Infergate != nil && b.Infergate.CostUSD != nil {
		fig.CostUSD = *b.Infergate.CostUSD
	}
	fig.ItemsPerSec = float64(fig.Items) / fig.RunS
	fig.ItemsPerSecFromCreate = float64(fig.Items) / t3.Sub(t1).Seconds()
	return fig, nil
}

// writeJobFile writes n v2 inference requests for model, one per line,
// with random FP32 inputs of the shapes the server reports (a dynamic
// batch dimension becomes 1).
func writeJobFile(ctx context.Context, c *batchClient, path, model string, n int, seed uint64) (int64, error) {
	var meta struct {
		Inputs []struct {
			Name     string  `json:"name"`
			Datatype string  `json:"datatype"`
			Shape    []int64 `json:"shape"`
		} `json:"inputs"`
	}
	if err := c.call(ctx, http.MethodGet, "/v2/models/"+model, nil, nil, &meta); err != nil {
		return 0, err
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(seed, 1))
	var line []byte
	for i := range n {
		line = fmt.Appendf(line[:0], `{"custom_id":"item-%d","method":"POST","url":"/v2/models/%s/infer","body":{"inputs":[`, i, model)
		for k, in := range meta.Inputs {
			if in.Datatype != "FP32" {
				return 0, fmt.Errorf("input %s is %s: the job generator writes FP32 only", in.Name, in.Datatype)
			}
			if k > 0 {
				line = append(line, ',')
			}
			shape, _ := json.Marshal(in.Shape)
			elems := int64(1)
			for d, s := range in.Shape {
				if s < 0 {
					s = 1
					in.Shape[d] = 1
				}
				elems *= s
			}
			shape, _ = json.Marshal(in.Shape)
			line = fmt.Appendf(line, `{"name":%q,"datatype":"FP32","shape":%s,"data":[`, in.Name, shape)
			for e := range elems {
				if e > 0 {
					line = append(line, ',')
				}
				line = strconv.AppendFloat(line, float64(float32(r.NormFloat64())), 'g', -1, 32)
			}
			line = append(line, "]}"...)
		}
		line = append(line, "]}}\n"...)
		if _, err := w.Write(line); err != nil {
			return 0, err
		}
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), f.Close()
}

func costReport(ctx context.Context, url string) (*cost.Report, error) {
	var rep cost.Report
	return &rep, getJSON(ctx, url+"/v1/cost", &rep)
}

// lineDelta sums the ledger lines of model and class between two reports
// (over every mode).
func lineDelta(a, b *cost.Report, model, class string) cost.Line {
	var d cost.Line
	add := func(r *cost.Report, sign int64) {
		for _, l := range r.Lines {
			if l.Model == model && l.Class == class {
				d.Items += sign * l.Items
				d.Requests += sign * l.Requests
				d.Batches += sign * l.Batches
				d.BusySeconds += float64(sign) * l.BusySeconds
			}
		}
	}
	add(b, 1)
	add(a, -1)
	return d
}

func printJob(w io.Writer, asJSON bool, out map[string]any) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	keys := []string{"runtime", "job_items", "input_bytes", "raw_batch_size", "raw_items_per_sec", "job_vs_raw", "job_from_create_vs_raw",
		"job_avg_batch", "job_cost_per_1k_busy", "single_cost_per_1k_busy", "job_cost_vs_single", "job_batch_cost_usd", "job_ledger_bulk_cost_usd",
		"rt_busy_fraction", "rt_p99_with_job_vs_alone", "job_items_per_sec_during_rt", "spare_items_per_sec", "job_share_of_spare"}
	for _, k := range keys {
		if v, ok := out[k]; ok {
			switch x := v.(type) {
			case float64:
				fmt.Fprintf(tw, "%s\t%.4g\n", k, x)
			default:
				fmt.Fprintf(tw, "%s\t%v\n", k, x)
			}
		}
	}
	if a, ok := out["alone"].(*jobFigures); ok {
		fmt.Fprintf(tw, "job alone\tupload %.2fs, create %.2fs, run %.2fs, %.0f items/s (%.0f from create), process %.2f cores during the run\n",
			a.UploadS, a.CreateS, a.RunS, a.ItemsPerSec, a.ItemsPerSecFromCreate, a.RunCores)
	}
	for _, k := range []string{"rt_alone", "rt_with_job"} {
		if m, ok := out[k].(map[string]any); ok {
			fmt.Fprintf(tw, "%s\tp50 %s ms, p99 %s ms, %s req/s ok\n", k, num(m["p50_ms"], 2), num(m["p99_ms"], 2), num(m["throughput_rps"], 0))
		}
	}
	return tw.Flush()
}
