// Package engine loads models into runtime sessions (one per instance),
// warms them up, and puts a batching scheduler in front of each model. It
// fans what the schedulers measure out to the metrics and the cost ledger.
package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/cost"
	"github.com/infergate/infergate/internal/metrics"
	"github.com/infergate/infergate/internal/perfmodel"
	"github.com/prometheus/client_golang/prometheus"
)

// Model is a loaded model.
type Model struct {
	Info  infergate.ModelInfo
	Sched *batching.Scheduler
	cfg   config.Model
	bulk  []*idleExecutor

	// scale serializes SetInstances; mu guards sessions.
	scale    sync.Mutex
	mu       sync.Mutex
	sessions []backend.Session
	router   atomic.Pointer[routerBox]
	recent   *recentLatency
}

// RecentP99 returns the p99 of the time in the server (queue and batch) of
// the urgent and normal requests served since the last call, and how many
// there were (0: none; the p99 is then 0).
func (m *Model) RecentP99() (time.Duration, int) { return m.recent.p99AndReset() }

// recentLatency keeps the latencies of the real-time requests served since
// it was last read, up to a bound.
type recentLatency struct {
	mu  sync.Mutex
	buf []float64 // seconds
}

// maxRecent bounds the latencies kept between reads.
const maxRecent = 1 << 16

func (r *recentLatency) add(d time.Duration) {
	r.mu.Lock()
	if len(r.buf) < maxRecent {
		r.buf = append(r.buf, d.Seconds())
	}
	r.mu.Unlock()
}

func (r *recentLatency) p99AndReset() (time.Duration, int) {
	r.mu.Lock()
	buf := r.buf
	r.buf = make([]float64, 0, len(buf))
	r.mu.Unlock()
	if len(buf) == 0 {
		return 0, 0
	}
	slices.Sort(buf)
	i := int(math.Ceil(0.99*float64(len(buf)))) - 1
	return time.Duration(buf[max(i, 0)] * float64(time.Second)), len(buf)
}

// Router routes a model's requests between serving modes (the mode
// switcher, internal/switcher).
type Router interface {
	Submit(ctx context.Context, c infergate.Class, inputs []infergate.Tensor, items int, timeout time.Duration) (*batching.Response, error)
}

type routerBox struct{ r Router }

// SetRouter sends the model's requests through r from now on.
func (m *Model) SetRouter(r Router) { m.router.Store(&routerBox{r}) }

// Submit runs a request through the model's router when it has one, else
// straight into its class's queue (batching.Scheduler.Submit).
func (m *Model) Submit(ctx context.Context, c infergate.Class, inputs []infergate.Tensor, items int, timeout time.Duration) (*batching.Response, error) {
	if b := m.router.Load(); b != nil {
		return b.r.Submit(ctx, c, inputs, items, timeout)
	}
	return m.Sched.Submit(ctx, c, inputs, items, timeout)
}

// Options configure an Engine.
type Options struct {
	Runtime    backend.Runtime
	Ledger     *cost.Ledger
	Metrics    *metrics.Metrics
	Registerer prometheus.Registerer
	Clock      clock.Clock
	Logger     *slog.Logger
	// ComputeNice, if > 0, is the nice value of the OS threads that run
	// batches (Linux): HTTP handling, admission and shedding then take the
	// CPU first, and compute uses what is left. 0 leaves them alone.
	ComputeNice int
}

// Engine serves a set of models.
type Engine struct {
	opt   Options
	log   *slog.Logger
	ready atomic.Bool

	mu     sync.RWMutex
	models map[string]*Model
}

// New returns an empty engine.
func New(opt Options) *Engine {
	if opt.Clock == nil {
		opt.Clock = clock.Real{}
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Registerer == nil {
		opt.Registerer = prometheus.NewRegistry()
	}
	if opt.Ledger == nil {
		opt.Ledger = cost.New(opt.Clock, 0)
	}
	if opt.Metrics == nil {
		opt.Metrics = metrics.New(opt.Registerer, opt.Ledger.PricePerHour())
	}
	return &Engine{opt: opt, log: opt.Logger, models: map[string]*Model{}}
}

// Ledger returns the engine's cost ledger.
func (e *Engine) Ledger() *cost.Ledger { return e.opt.Ledger }

// RuntimeName is the name of the runtime models run on.
func (e *Engine) RuntimeName() string { return e.opt.Runtime.Name() }

// SetReady marks the engine ready (or not) for traffic.
func (e *Engine) SetReady(v bool) { e.ready.Store(v) }

// Ready reports whether the engine takes traffic.
func (e *Engine) Ready() bool {
	ok, _ := e.Readiness()
	return ok
}

// Readiness reports whether the engine takes traffic and, if not, why: not
// started, shutting down, or a model whose runtime has stalled on a batch
// (batching.Scheduler.Stalled).
func (e *Engine) Readiness() (bool, string) {
	if !e.ready.Load() {
		return false, "not ready"
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	for name, m := range e.models {
		if stalled, why := m.Sched.Stalled(); stalled {
			return false, fmt.Sprintf("model %s: %s", name, why)
		}
	}
	return true, ""
}

// Load opens mc.Instances sessions of the model, warms them up, and starts
// its scheduler. mc must be validated.
func (e *Engine) Load(ctx context.Context, mc config.Model) error {
	mc.ModelDefaults()
	log := e.log.With("model", mc.Name)
	if _, err := e.Model(mc.Name); err == nil {
		return fmt.Errorf("model %s is already loaded", mc.Name)
	}
	var sessions []backend.Session
	var bulk []*idleExecutor
	closeAll := func() {
		for _, s := range sessions {
			_ = s.Close()
		}
		for _, x := range bulk {
			_ = x.Close()
		}
	}
	for i := range mc.Instances {
		s, err := e.opt.Runtime.Open(mc.Path, backend.Options{Threads: mc.Threads})
		if err != nil {
			closeAll()
			return fmt.Errorf("model %s instance %d: %w", mc.Name, i, err)
		}
		sessions = append(sessions, s)
	}
	for i := range mc.BulkSessions() {
		// One thread each: bulk is throughput work, for which one
		// single-threaded session per core does best (docs/benchmarks.md),
		// and then the whole batch runs on the idle thread, where its CPU
		// time is measured. (A runtime's own worker threads might not
		// inherit the idle priority: the pure-Go executor's are goroutines.)
		x, err := newIdleExecutor(func() (backend.Session, error) {
			return e.opt.Runtime.Open(mc.Path, backend.Options{Threads: 1})
		}, 1, log)
		if err != nil {
			closeAll()
			return fmt.Errorf("model %s bulk instance %d: %w", mc.Name, i, err)
		}
		bulk = append(bulk, x)
	}
	info := infergate.ModelInfo{Name: mc.Name, Version: "1", Platform: "onnx", Runtime: e.opt.Runtime.Name(),
		Inputs: sessions[0].Inputs(), Outputs: sessions[0].Outputs(), MaxBatchSize: mc.MaxBatchSize}
	if !batchable(info) {
		info.MaxBatchSize = 0
	}
	lat := perfmodel.New()
	if mc.WarmupRuns > 0 {
		start := time.Now()
		execs := make([]batching.Executor, 0, len(sessions)+len(bulk))
		for _, s := range sessions {
			execs = append(execs, s)
		}
		for _, x := range bulk {
			execs = append(execs, x)
		}
		if err := warmup(ctx, execs, info, mc.WarmupRuns, lat); err != nil {
			closeAll()
			return fmt.Errorf("model %s warmup: %w", mc.Name, err)
		}
		log.Info("warmed up", "seconds", time.Since(start).Seconds(), "latency", lat.Points())
	}
	recent := &recentLatency{}
	sched := batching.New(batching.Config{
		Model: mc.Name, MaxBatchSize: info.MaxBatchSize, Policies: mc.Policies(), Clock: e.opt.Clock,
		Latency: lat, Recorder: recorder{e.opt.Metrics, e.opt.Ledger, recent}, Logger: log,
		WorkerInit: func() { lowerComputePriority(e.opt.ComputeNice, log) },
	})
	execs := make([]batching.Executor, len(sessions))
	for i, s := range sessions {
		execs[i] = s
	}
	bulkExecs := make([]batching.Executor, len(bulk))
	for i, x := range bulk {
		bulkExecs[i] = x
	}
	m := &Model{Info: info, Sched: sched, cfg: mc, sessions: sessions, bulk: bulk, recent: recent}
	e.mu.Lock()
	if _, dup := e.models[mc.Name]; dup {
		e.mu.Unlock()
		closeAll()
		return fmt.Errorf("model %s is already loaded", mc.Name)
	}
	e.models[mc.Name] = m
	e.mu.Unlock()
	for _, x := range bulk {
		x.Idle()
	}
	sched.Start(execs...)
	sched.StartBulk(bulkExecs...)
	// Bulk instances share the instances' cores: they are not capacity of
	// their own, and the ledger prices the instances only.
	e.opt.Ledger.SetInstances(mc.Name, len(sessions))
	metrics.RegisterModel(e.opt.Registerer, mc.Name, sched.QueueLen,
		m.Instances,
		func() float64 { return e.utilization(mc.Name) })
	metrics.RegisterLatencyModel(e.opt.Registerer, mc.Name, func() []metrics.LatencyPoint {
		var out []metrics.LatencyPoint
		for _, p := range lat.Points() {
			out = append(out, metrics.LatencyPoint{BatchSize: p.BatchSize, Seconds: p.MeanMS / 1e3, Count: p.Count})
		}
		return out
	})
	log.Info("model loaded", "runtime", info.Runtime, "instances", len(sessions), "bulk_instances", len(bulk), "threads", mc.Threads, "max_batch_size", info.MaxBatchSize,
		"inputs", info.Inputs, "outputs", info.Outputs)
	return nil
}

func (e *Engine) utilization(model string) float64 {
	for _, m := range e.opt.Ledger.Report().Models {
		if m.Model == model {
			return m.Utilization
		}
	}
	return 0
}

// batchable reports whether every input and output has a dynamic first
// dimension, the batch dimension.
func batchable(info infergate.ModelInfo) bool {
	for _, s := range slices.Concat(info.Inputs, info.Outputs) {
		if len(s.Shape) == 0 || s.Shape[0] != -1 {
			return false
		}
	}
	return len(info.Inputs) > 0
}

// Model returns a loaded model, or ENotFound.
func (e *Engine) Model(name string) (*Model, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	m, ok := e.models[name]
	if !ok {
		return nil, infergate.Errorf(infergate.ENotFound, "model %q not found", name)
	}
	return m, nil
}

// Models lists the loaded models by name.
func (e *Engine) Models() []infergate.ModelInfo {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]infergate.ModelInfo, 0, len(e.models))
	for _, m := range e.models {
		out = append(out, m.Info)
	}
	slices.SortFunc(out, func(a, b infergate.ModelInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Close drains every scheduler (up to ctx's deadline) and closes the
// sessions.
func (e *Engine) Close(ctx context.Context) error {
	e.ready.Store(false)
	e.mu.Lock()
	models := e.models
	e.models = map[string]*Model{}
	e.mu.Unlock()
	var errs []error
	for _, m := range models {
		if err := m.Sched.Close(ctx); err != nil {
			// A worker may still be inside Run: leave its sessions open
			// rather than free them under it (the process is exiting).
			errs = append(errs, fmt.Errorf("model %s: %w (sessions left open)", m.Info.Name, err))
			continue
		}
		m.mu.Lock()
		for _, s := range m.sessions {
			errs = append(errs, s.Close())
		}
		m.mu.Unlock()
		for _, x := range m.bulk {
			errs = append(errs, x.Close())
		}
	}
	return errors.Join(errs...)
}

// warmup runs every session at batch sizes 1, 2, 4, ... up to the maximum,
// discarding each session's first run, and seeds lat with the rest.
func warmup(ctx context.Context, sessions []batching.Executor, info infergate.ModelInfo, runs int, lat *perfmodel.Model) error {
	sizes := []int{1}
	for n := 2; n < info.MaxBatchSize; n *= 2 {
		sizes = append(sizes, n)
	}
	if info.MaxBatchSize > 1 {
		sizes = append(sizes, info.MaxBatchSize)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range sizes {
		in := SyntheticInputs(info.Inputs, n, rng)
		for _, s := range sessions {
			for i := range runs + 1 {
				if err := ctx.Err(); err != nil {
					return err
				}
				start := time.Now()
				if _, err := s.Run(ctx, in); err != nil {
					return fmt.Errorf("batch %d: %w", n, err)
				}
				if i > 0 {
					lat.Observe(n, time.Since(start))
				}
			}
		}
	}
	return nil
}

// SyntheticInputs builds inputs of batch n for specs: uniform random values
// in [-1, 1) for float types, zeros otherwise; dynamic non-batch dimensions
// are 1.
func SyntheticInputs(specs []infergate.TensorSpec, n int, rng *rand.Rand) []infergate.Tensor {
	out := make([]infergate.Tensor, len(specs))
	for i, s := range specs {
		shape := slices.Clone(s.Shape)
		for j, d := range shape {
			if d < 0 {
				shape[j] = 1
			}
		}
		if len(shape) > 0 && s.Shape[0] == -1 {
			shape[0] = int64(n)
		}
		count := infergate.NumElements(shape)
		data := make([]byte, int(count)*s.DataType.Size())
		switch s.DataType {
		case infergate.FP32:
			for k := range int(count) {
				binary.LittleEndian.PutUint32(data[4*k:], math.Float32bits(rng.Float32()*2-1))
			}
		case infergate.FP64:
			for k := range int(count) {
				binary.LittleEndian.PutUint64(data[8*k:], math.Float64bits(rng.Float64()*2-1))
			}
		}
		out[i] = infergate.Tensor{Name: s.Name, DataType: s.DataType, Shape: shape, Data: data}
	}
	return out
}

// recorder fans scheduler measurements out to metrics and the ledger.
type recorder struct {
	m      *metrics.Metrics
	l      *cost.Ledger
	recent *recentLatency
}

func (r recorder) RecordRequest(model string, c infergate.Class, o batching.Outcome, queued, compute time.Duration) {
	r.m.RecordRequest(model, c, o, queued, compute)
	if o == batching.OutcomeOK && c != infergate.ClassBulk {
		r.recent.add(queued + compute)
	}
}

func (r recorder) RecordBatch(model string, b *batching.BatchInfo) {
	r.m.RecordBatch(model, b)
	if b.Err != nil {
		return
	}
	shares := make([]cost.Share, 0, infergate.NumClasses)
	for _, c := range infergate.Classes {
		if b.ItemsBy[c] > 0 {
			shares = append(shares, cost.Share{Class: c, Mode: b.Modes[c], Requests: b.Requests[c], Items: b.ItemsBy[c]})
		}
	}
	r.l.RecordBatch(model, b.Busy, shares, b.Batch1)
}

// Instances is the number of the model's (regular) instances.
func (m *Model) Instances() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions)
}

// Instances returns the number of regular instances of model (0 when it
// is not loaded).
func (e *Engine) Instances(model string) int {
	m, err := e.Model(model)
	if err != nil {
		return 0
	}
	return m.Instances()
}

// SetInstances adds or retires regular instances of model until it has n
// (at least 1). New sessions are opened and warmed up with one run before
// they take traffic; retiring instances finish their current batch first,
// so no accepted request is dropped. The ledger prices the new count from
// now on.
func (e *Engine) SetInstances(ctx context.Context, model string, n int) error {
	m, err := e.Model(model)
	if err != nil {
		return err
	}
	if n < 1 {
		return infergate.Errorf(infergate.EInvalid, "model %s needs at least one instance, not %d", model, n)
	}
	m.scale.Lock()
	defer m.scale.Unlock()
	for m.Instances() < n {
		s, err := e.opt.Runtime.Open(m.cfg.Path, backend.Options{Threads: m.cfg.Threads})
		if err != nil {
			return fmt.Errorf("model %s: open instance: %w", model, err)
		}
		if m.cfg.WarmupRuns >= 0 {
			in := SyntheticInputs(m.Info.Inputs, 1, rand.New(rand.NewPCG(1, 2)))
			if _, err := s.Run(ctx, in); err != nil {
				_ = s.Close()
				return fmt.Errorf("model %s: warm up new instance: %w", model, err)
			}
		}
		m.mu.Lock()
		m.sessions = append(m.sessions, s)
		m.mu.Unlock()
		m.Sched.Start(s)
		e.opt.Ledger.SetInstances(model, m.Instances())
	}
	for m.Instances() > n {
		x, err := m.Sched.Retire(ctx)
		if err != nil {
			return fmt.Errorf("model %s: retire instance: %w", model, err)
		}
		m.mu.Lock()
		for i, s := range m.sessions {
			if batching.Executor(s) == x {
				m.sessions = slices.Delete(m.sessions, i, i+1)
				break
			}
		}
		m.mu.Unlock()
		e.opt.Ledger.SetInstances(model, m.Instances())
		if s, ok := x.(backend.Session); ok {
			if err := s.Close(); err != nil {
				e.log.Warn("closing a retired instance", "model", model, "err", err)
			}
		}
	}
	e.log.Info("instances set", "model", model, "instances", n)
	return nil
}
