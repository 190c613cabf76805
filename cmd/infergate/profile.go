package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/profile"
	"gopkg.in/yaml.v3"
)

// runProfile measures the model at each batch size and configuration on
// the real runtime, and chooses a batch size and configuration.
func runProfile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf serveFlags
	sf.register(fs)
	model := fs.String("model", "mlp", "model name")
	preferred := fs.String("preferred", "", "extra batch sizes to measure, comma-separated")
	configs := fs.String("configs", "", "configurations INSTANCESxTHREADS, comma-separated (default: every split of the CPUs, and 1x1)")
	dur := fs.Duration("point-duration", 3*time.Second, "measured time per point, after a warmup")
	memLimit := fs.String("memory-limit", "", "memory limit for the choice, e.g. 512MiB or 2GB (default: none)")
	latLimit := fs.Duration("latency-limit", 50*time.Millisecond, "batch p99 latency limit for the choice (0: none)")
	asJSON := fs.Bool("json", false, "print JSON: points and choice")
	writeConfig := fs.String("write-config", "", "write the model's configuration with the chosen settings to `file` (YAML)")
	svg := fs.String("svg", "", "plot the curves to `file` (SVG)")
	inProcess := fs.Bool("in-process", false, "measure every configuration in this process (memory figures then depend on the order: freed memory is reused)")
	child := fs.Bool("child", false, "internal: measure --configs in this process and print the points as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mem, err := parseBytes(*memLimit)
	if err != nil {
		return fmt.Errorf("--memory-limit: %w", err)
	}
	log, err := newLogger(stderr, "warn")
	if err != nil {
		return err
	}
	cfg, m, rt, err := modelRuntime(&sf, *model, log)
	if err != nil {
		return err
	}
	mb := m.MaxBatchSize // --max-batch sets it for the default model
	var pref []int
	if *preferred != "" {
		for _, s := range strings.Split(*preferred, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				return fmt.Errorf("--preferred %q: want positive integers", *preferred)
			}
			pref = append(pref, n)
		}
	}
	cfgs := profile.Configs(runtime.NumCPU())
	if *configs != "" {
		if cfgs, err = parseConfigs(*configs); err != nil {
			return err
		}
	}
	start := time.Now()
	opt := profile.Options{
		Open:     func(threads int) (backend.Session, error) { return rt.Open(m.Path, backend.Options{Threads: threads}) },
		Sizes:    profile.Sizes(mb, pref),
		Configs:  cfgs,
		Duration: *dur, PricePerInstanceHour: cfg.PricePerInstanceHour,
		Progress: func(p profile.Point) {
			fmt.Fprintf(stderr, "profile: %dx%d batch %d: %.0f items/s, p50 %.2f ms, p99 %.2f ms, %d MB\n",
				p.Instances, p.Threads, p.BatchSize, p.ItemsPerSec, p.P50MS, p.P99MS, p.MemoryBytes>>20)
		},
	}
	var points []profile.Point
	if *child || *inProcess {
		if points, err = profile.Run(ctx, opt); err != nil {
			return err
		}
		if *child {
			return json.NewEncoder(stdout).Encode(points)
		}
	} else {
		// One process per configuration, so that each one's memory is
		// measured from a clean start and not from memory the previous
		// configuration freed but the allocator kept.
		for _, c := range cfgs {
			ps, err := profileChild(ctx, &sf, *model, *preferred, *dur, c, stderr)
			if err != nil {
				return fmt.Errorf("profile %s: %w", c, err)
			}
			points = append(points, ps...)
		}
	}
	choice, err := profile.Choose(points, profile.Limits{MemoryBytes: mem, BatchLatency: *latLimit})
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	if *svg != "" {
		f, err := os.Create(*svg)
		if err != nil {
			return err
		}
		title := fmt.Sprintf("%s on %s: %d points in %.0f s", m.Name, rt.Name(), len(points), elapsed.Seconds())
		if err := profile.WriteSVG(f, title, points, choice); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if *writeConfig != "" {
		if err := writeModelConfig(*writeConfig, *m, choice); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"model": m.Name, "runtime": rt.Name(), "elapsed_s": elapsed.Seconds(),
			"price_per_instance_hour": cfg.PricePerInstanceHour, "points": points, "choice": choice})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "instances\tthreads\tbatch\titems/s\tp50_ms\tp99_ms\tmemory_MB\tgrowth_MB\tcost/1k $\t")
	for _, p := range points {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.0f\t%.2f\t%.2f\t%d\t%d\t%.7f\t\n", p.Instances, p.Threads, p.BatchSize, p.ItemsPerSec,
			p.P50MS, p.P99MS, p.MemoryBytes>>20, p.ArenaGrowthBytes>>20, p.CostPer1k)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nchoice: batch %d on %d instance(s) x %d thread(s), %.0f items/s (knee %d, memory-safe max %d), measured in %.0f s\n",
		choice.BatchSize, choice.Instances, choice.Threads, choice.ItemsPerSec, choice.KneeBatchSize, choice.MemorySafeMaxBatch, elapsed.Seconds())
	for _, r := range choice.Reasons {
		fmt.Fprintln(stdout, "  -", r)
	}
	return nil
}

// writeModelConfig writes m with the chosen configuration as a config file
// of one model: instances and threads from the choice, the chosen batch
// size as the model's and the bulk lane's maximum, and the knee as the
// normal class's maximum (real-time batches stay short of the knee's
// latency cost).
func writeModelConfig(path string, m config.Model, c *profile.Choice) error {
	type policy struct {
		MaxBatchSize int `yaml:"max_batch_size"`
	}
	type model struct {
		Name         string            `yaml:"name"`
		Path         string            `yaml:"path"`
		Instances    int               `yaml:"instances"`
		Threads      int               `yaml:"threads"`
		MaxBatchSize int               `yaml:"max_batch_size"`
		Classes      map[string]policy `yaml:"classes"`
	}
	out := struct {
		Models []model `yaml:"models"`
	}{Models: []model{{Name: m.Name, Path: m.Path, Instances: c.Instances, Threads: c.Threads, MaxBatchSize: c.BatchSize,
		Classes: map[string]policy{"normal": {MaxBatchSize: min(c.KneeBatchSize, c.BatchSize)}, "bulk": {MaxBatchSize: c.BatchSize}}}}}
	b, err := yaml.Marshal(out)
	if err != nil {
		return err
	}
	head := fmt.Sprintf("# written by infergate profile: batch %d on %dx%d measured %.0f items/s; knee %d\n",
		c.BatchSize, c.Instances, c.Threads, c.ItemsPerSec, c.KneeBatchSize)
	return os.WriteFile(path, append([]byte(head), b...), 0o644)
}

func parseConfigs(s string) ([]profile.Config, error) {
	var out []profile.Config
	for _, part := range strings.Split(s, ",") {
		i, t, ok := strings.Cut(strings.TrimSpace(part), "x")
		ni, err1 := strconv.Atoi(i)
		nt, err2 := strconv.Atoi(t)
		if !ok || err1 != nil || err2 != nil || ni < 1 || nt < 1 || ni > 64 || nt > 256 {
			return nil, fmt.Errorf("--configs %q: want INSTANCESxTHREADS, e.g. 2x1,1x2", s)
		}
		out = append(out, profile.Config{Instances: ni, Threads: nt})
	}
	return out, nil
}

// parseBytes reads 512MiB, 2GB, 1048576 (bytes); "" is 0.
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%q: want a positive size such as 512MiB or 2GB", s)
	}
	return int64(v * float64(mult)), nil
}

// profileChild runs "infergate profile --child" for one configuration and
// reads its points.
func profileChild(ctx context.Context, sf *serveFlags, model, preferred string, dur time.Duration, c profile.Config, stderr io.Writer) ([]profile.Point, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"profile", "--child", "--model", model, "--configs", c.String(), "--point-duration", dur.String()}
	if preferred != "" {
		args = append(args, "--preferred", preferred)
	}
	for _, f := range []struct{ name, v string }{{"config", sf.configPath}, {"data-dir", sf.dataDir}, {"runtime", sf.runtime},
		{"ort-lib", sf.ortLib}, {"model-repository", sf.repo}} {
		if f.v != "" {
			args = append(args, "--"+f.name, f.v)
		}
	}
	if sf.maxBatch > 0 {
		args = append(args, "--max-batch", strconv.Itoa(sf.maxBatch))
	}
	if sf.price >= 0 {
		args = append(args, "--price", strconv.FormatFloat(sf.price, 'g', -1, 64))
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var points []profile.Point
	if err := json.Unmarshal(out, &points); err != nil {
		return nil, fmt.Errorf("reading the child's points: %w", err)
	}
	return points, nil
}
