package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/infergate/infergate/internal/assets"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/backend/gorun"
	"github.com/infergate/infergate/internal/backend/ort"
	"github.com/infergate/infergate/internal/backend/remote"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/kserve"
	"github.com/infergate/infergate/internal/metrics"
	"github.com/infergate/infergate/internal/onnx"
)

// serveFlags are the flags shared by serve and the in-process bench.
type serveFlags struct {
	configPath, addr, dataDir, runtime, ortLib, repo, logLevel string
	apiKey, store                                              string
	price                                                      float64
	instances, threads, maxBatch, computeNice, bulkInstances   int
	checkConfig                                                bool
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.configPath, "config", "", "YAML config `file`")
	fs.StringVar(&f.addr, "addr", "", "listen address (default 127.0.0.1:8080)")
	fs.StringVar(&f.dataDir, "data-dir", "", "data folder (default ./data)")
	fs.StringVar(&f.runtime, "runtime", "", "auto, onnxruntime or gorun (default auto)")
	fs.StringVar(&f.ortLib, "ort-lib", "", "path of libonnxruntime.so (default: the fetched copy in the cache)")
	fs.StringVar(&f.repo, "model-repository", "", "folder of <name>/model.onnx models")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Float64Var(&f.price, "price", -1, "price of one instance-hour in USD (default 0.10)")
	fs.IntVar(&f.instances, "instances", 0, "instances of the default model (default 1)")
	fs.IntVar(&f.threads, "threads", -1, "threads per instance of the default model (default: runtime's choice)")
	fs.IntVar(&f.bulkInstances, "bulk-instances", 0, "bulk-only instances of the default model, at idle CPU priority (default: as many as instances; -1: none)")
	fs.IntVar(&f.maxBatch, "max-batch", 0, "max batch size of the default model (default 64)")
	fs.IntVar(&f.computeNice, "compute-nice", -1, "nice value of compute threads (Linux; default 0: unchanged)")
	fs.BoolVar(&f.checkConfig, "check-config", false, "validate the configuration and exit")
	fs.StringVar(&f.store, "store", "", "job store: sqlite or a postgres:// URL shared by replicas (default sqlite; prefer the config file or PGPASSWORD for a password)")
	fs.StringVar(&f.apiKey, "api-key", "", "an admin API key required on every route but the health checks, in addition to the config's api_keys (default: none; then loopback only)")
}

// load builds the configuration: defaults, then the file, then flags.
func (f *serveFlags) load() (config.Config, error) {
	cfg := config.Default()
	if f.configPath != "" {
		var err error
		if cfg, err = config.Load(f.configPath); err != nil {
			return cfg, err
		}
	}
	if f.addr != "" {
		cfg.Addr = f.addr
	}
	if f.dataDir != "" {
		cfg.DataDir = f.dataDir
	}
	if f.runtime != "" {
		cfg.Runtime = f.runtime
	}
	if f.ortLib != "" {
		cfg.ORTLibrary = f.ortLib
	}
	if f.repo != "" {
		cfg.ModelRepository = f.repo
	}
	if f.price >= 0 {
		cfg.PricePerInstanceHour = f.price
	}
	if f.computeNice >= 0 {
		cfg.ComputeNice = f.computeNice
	}
	if f.store != "" {
		cfg.Store = f.store
	}
	if f.apiKey != "" {
		cfg.APIKeys = append(cfg.APIKeys, config.APIKey{Name: "admin", Key: f.apiKey, Role: "admin"})
	}
	return cfg, cfg.Validate()
}

// defaultModel is the reference model served when nothing is configured.
// Unless flags say otherwise it gets two single-threaded instances on a
// 2-core machine (one instance per core, up to two, the other cores as
// intra-op threads): on the 2-core reference machine that served 20-40%
// more than one 2-thread instance, because a single-threaded session never
// waits at a thread barrier for a core the HTTP server has taken (see
// docs/benchmarks.md).
func (f *serveFlags) defaultModel(dataDir string) config.Model {
	m := config.Model{Name: "mlp", Path: filepath.Join(dataDir, "models", "mlp", "model.onnx"), Instances: f.instances, MaxBatchSize: f.maxBatch,
		BulkInstances: f.bulkInstances}
	if m.Instances == 0 {
		m.Instances = min(max(runtime.NumCPU(), 1), 2)
	}
	m.Threads = max(runtime.NumCPU()/m.Instances, 1)
	if f.threads >= 0 {
		m.Threads = f.threads
	}
	m.ModelDefaults()
	return m
}

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	f.register(fs)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the server to `file` until it stops")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	cfg, err := f.load()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	models, err := resolveModels(cfg, &f, log)
	if err != nil {
		return err
	}
	if f.checkConfig {
		fmt.Fprintln(stderr, "config OK")
		return nil
	}
	srv, err := startServer(ctx, cfg, models, log, nil)
	if err != nil {
		return err
	}
	log.Info("serving", "addr", srv.Addr(), "runtime", srv.eng.RuntimeName())
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-srv.errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Close(sctx)
}

// resolveModels lists the models to serve: the configured ones, the
// repository's, or else the reference model, generated on first start.
func resolveModels(cfg config.Config, f *serveFlags, log *slog.Logger) ([]config.Model, error) {
	models := append([]config.Model(nil), cfg.Models...)
	if cfg.ModelRepository != "" {
		repo, err := config.RepositoryModels(cfg.ModelRepository)
		if err != nil {
			return nil, err
		}
		models = append(models, repo...)
	}
	if len(models) == 0 {
		m := f.defaultModel(cfg.DataDir)
		if _, err := os.Stat(m.Path); errors.Is(err, os.ErrNotExist) {
			log.Info("generating the reference model", "path", m.Path)
			if err := os.MkdirAll(filepath.Dir(m.Path), 0o755); err != nil {
				return nil, err
			}
			if err := onnx.WriteReferenceModel(m.Path); err != nil {
				return nil, fmt.Errorf("generate reference model: %w", err)
			}
		}
		models = append(models, m)
	}
	seen := map[string]bool{}
	for i := range models {
		models[i].ModelDefaults()
		if err := models[i].Validate(); err != nil {
			return nil, fmt.Errorf("model %s: %w", models[i].Name, err)
		}
		if seen[models[i].Name] {
			return nil, fmt.Errorf("model %s: configured twice (config file and model repository)", models[i].Name)
		}
		seen[models[i].Name] = true
	}
	return models, nil
}

// findModel returns the model called name among models.
func findModel(models []config.Model, name string) (*config.Model, error) {
	for i := range models {
		if models[i].Name == name {
			return &models[i], nil
		}
	}
	return nil, fmt.Errorf("model %q is not configured", name)
}

// modelRuntime loads the configuration, resolves the models and opens
// the runtime: what every measuring command needs for model name.
func modelRuntime(sf *serveFlags, name string, log *slog.Logger) (config.Config, *config.Model, backend.Runtime, error) {
	cfg, err := sf.load()
	if err != nil {
		return cfg, nil, nil, err
	}
	models, err := resolveModels(cfg, sf, log)
	if err != nil {
		return cfg, nil, nil, err
	}
	m, err := findModel(models, name)
	if err != nil {
		return cfg, nil, nil, err
	}
	rt, err := openRuntime(cfg, log)
	return cfg, m, rt, err
}

// getJSON decodes the JSON answer of GET url into out.
func getJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// startLocal starts a server in this process for a measurement and returns
// its base URL and the function that stops it.
func startLocal(ctx context.Context, cfg config.Config, models []config.Model, log *slog.Logger, rt backend.Runtime) (string, func(), error) {
	srv, err := startServer(ctx, cfg, models, log, rt)
	if err != nil {
		return "", nil, err
	}
	return "http://" + srv.Addr(), func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = srv.Close(sctx)
	}, nil
}

// openRuntime picks the model runtime: a model whose path is an http:// or
// https:// URL runs on that remote KServe v2 server, any other on the
// local runtime (openLocalRuntime).
func openRuntime(cfg config.Config, log *slog.Logger) (backend.Runtime, error) {
	local, err := openLocalRuntime(cfg, log)
	if err != nil {
		return nil, err
	}
	return remote.Dispatch(local, remote.New(remote.Options{Logger: log})), nil
}

// openLocalRuntime picks the runtime of model files: ONNX Runtime when it
// loads, else the pure-Go executor (in auto mode), said clearly in the log.
func openLocalRuntime(cfg config.Config, log *slog.Logger) (backend.Runtime, error) {
	if cfg.Runtime == "gorun" {
		return gorun.New(), nil
	}
	lib := cfg.ORTLibrary
	if lib == "" {
		lib = os.Getenv("INFERGATE_ORT_LIB")
	}
	if lib == "" {
		lib = filepath.Join(assets.DefaultCacheDir(), assets.ORTLibrary.Name)
	}
	rt, err := ort.New(lib)
	if err == nil {
		return rt, nil
	}
	if cfg.Runtime == "onnxruntime" {
		return nil, fmt.Errorf("onnxruntime: %w (run 'infergate fetch' or 'make fetch' to get the library)", err)
	}
	log.Warn("ONNX Runtime could not be loaded; FALLING BACK to the pure-Go executor (slower). Run 'make fetch' to get ONNX Runtime.",
		"library", lib, "err", err)
	return gorun.New(), nil
}

// server is a running infergate.
type server struct {
	eng  *engine.Engine
	jobs *jobsStack
	ctl  *control
	http *http.Server
	ln   net.Listener
	log  *slog.Logger
	errc chan error
	reg  *prometheus.Registry
}

// Addr is the address the server listens on.
func (s *server) Addr() string { return s.ln.Addr().String() }

// startServer loads the models and starts listening. rt, if nil, is chosen
// by openRuntime.
func startServer(ctx context.Context, cfg config.Config, models []config.Model, log *slog.Logger, rt backend.Runtime) (*server, error) {
	if rt == nil {
		var err error
		if rt, err = openRuntime(cfg, log); err != nil {
			return nil, err
		}
	}
	setGOMAXPROCS(models, log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	clk := clock.Real{}
	ledger := cost.New(clk, cfg.PricePerInstanceHour)
	eng := engine.New(engine.Options{Runtime: rt, Ledger: ledger, Metrics: metrics.New(reg, cfg.PricePerInstanceHour),
		Registerer: reg, Clock: clk, Logger: log, ComputeNice: cfg.ComputeNice})
	for _, m := range models {
		if err := eng.Load(ctx, m); err != nil {
			_ = eng.Close(context.Background())
			return nil, err
		}
	}
	jobs, err := startJobs(cfg, eng, clk, log)
	if err != nil {
		_ = eng.Close(context.Background())
		return nil, err
	}
	ctl, err := startControl(cfg, models, eng, jobs.runner, reg, clk, log)
	if err != nil {
		_ = jobs.Close(10 * time.Second)
		_ = eng.Close(context.Background())
		return nil, err
	}
	ln, err := net.Listen("tcp", listenAddr(cfg, log))
	if err != nil {
		ctl.Close()
		_ = jobs.Close(10 * time.Second)
		_ = eng.Close(context.Background())
		return nil, err
	}
	h := httpapi.New(eng, reg, httpapi.Options{MaxBodyBytes: cfg.MaxBodyBytes, Version: version,
		Limits: kserve.Limits{MaxElements: cfg.MaxTensorElements},
		Jobs:   jobs.store, Notify: jobs.runner.Notify, Rate: jobs.runner.Rate, Clock: clk,
		Events: ctl.events, Modes: ctl.modes, Dashboard: ctl.dashboard(), APIKeys: apiKeys(cfg)}, log)
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	s := &server{eng: eng, jobs: jobs, ctl: ctl, http: hs, ln: ln, log: log, errc: make(chan error, 1), reg: reg}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- err
		}
	}()
	eng.SetReady(true)
	return s, nil
}

// setGOMAXPROCS raises GOMAXPROCS above the number of CPUs when the server
// runs threads at idle priority (bulk instances and the batch runner's
// bookkeeping; see engine.IdleThread), unless the GOMAXPROCS environment
// variable says otherwise. Such a thread can hold one of Go's scheduler
// slots while the kernel keeps it waiting behind real-time work; with no
// more slots than CPUs, that would idle a CPU that real-time goroutines
// want. Measured with the batch-job benchmark (docs/benchmarks.md). Setting
// it turns off Go's own updates of GOMAXPROCS when the CPU quota changes.
func setGOMAXPROCS(models []config.Model, log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	idle := 2 // the runner's polling loop and collector
	for _, m := range models {
		idle += m.BulkSessions()
	}
	// Start from Go's own default, which follows a container's CPU quota.
	n := runtime.GOMAXPROCS(0)
	if want := min(n+idle, 2*n); n < want {
		runtime.GOMAXPROCS(want)
		log.Debug("GOMAXPROCS raised for idle-priority threads", "gomaxprocs", want, "was", n)
	}
}

// Close shuts down in order: readiness off; the HTTP server drains its
// in-flight requests (which the schedulers still serve); the batch runner
// stops leasing, records its in-flight items (still served by the
// schedulers) and releases its leases, and the job store closes; then the
// schedulers drain and the sessions close.
func (s *server) Close(ctx context.Context) error {
	s.eng.SetReady(false)
	s.ctl.Close()
	err := s.http.Shutdown(ctx)
	jerr := s.jobs.Close(15 * time.Second)
	// The schedulers get their own budget: a slow drain of HTTP requests
	// must not leave them none.
	ectx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(err, jerr, s.eng.Close(ectx))
}

func runModelGen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("model gen", flag.ContinueOnError)
	out := fs.String("out", "data/models/mlp/model.onnx", "output `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	if err := onnx.WriteReferenceModel(*out); err != nil {
		return err
	}
	fmt.Fprintln(stdout, *out)
	return nil
}

func runFetch(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fetch", flag.ContinueOnError)
	dir := fs.String("cache", assets.DefaultCacheDir(), "cache `folder`")
	all := fs.Bool("test-models", false, "also fetch the third-party test models")
	if err := fs.Parse(args); err != nil {
		return err
	}
	list := []assets.Asset{assets.ORTLibrary}
	if *all {
		list = append(list, assets.PaddleOCRCls)
	}
	for _, a := range list {
		p, err := assets.Fetch(ctx, *dir, a)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, p)
	}
	return nil
}

// startCPUProfile writes a CPU profile to path (nothing if path is empty)
// until the returned function is called.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	pf, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		_ = pf.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = pf.Close()
	}, nil
}

// listenAddr is the configured address, moved to loopback when no API key
// is configured: an open server must not be reachable from other machines.
func listenAddr(cfg config.Config, log *slog.Logger) string {
	if len(cfg.APIKeys) > 0 {
		return cfg.Addr
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return cfg.Addr // net.Listen reports it
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return cfg.Addr
	}
	log.Warn("no API key configured: listening on loopback only; set api_keys or --api-key to serve other machines", "configured", cfg.Addr)
	return net.JoinHostPort("127.0.0.1", port)
}

// apiKeys converts the configured keys for the HTTP layer.
func apiKeys(cfg config.Config) []httpapi.APIKey {
	out := make([]httpapi.APIKey, 0, len(cfg.APIKeys))
	for _, k := range cfg.APIKeys {
		out = append(out, httpapi.APIKey{Name: k.Name, Key: k.Key, Role: httpapi.Role(k.Role)})
	}
	return out
}
