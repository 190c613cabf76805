package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/config"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/httpapi"
	"github.com/infergate/infergate/internal/jobs"
	"github.com/infergate/infergate/internal/jobs/postgres"
	"github.com/infergate/infergate/internal/jobs/runner"
	"github.com/infergate/infergate/internal/jobs/sqlite"
	"github.com/infergate/infergate/internal/kserve"
)

// jobsStack is the batch-job side of a server: the durable store and the
// runner that executes its items through the bulk lane.
type jobsStack struct {
	store  jobs.Store
	runner *runner.Runner
	cancel context.CancelFunc
	done   chan error
}

// startJobs opens the job store (see openStore) and starts the runner.
// Batches left in progress by an earlier process, or by any replica on a
// shared store, resume.
func startJobs(cfg config.Config, eng *engine.Engine, clk clock.Clock, log *slog.Logger) (*jobsStack, error) {
	store, err := openStore(cfg, clk)
	if err != nil {
		return nil, fmt.Errorf("job store: %w", err)
	}
	log.Info("job store", "kind", storeKind(cfg.Store))
	run, err := runner.New(runner.Config{
		Store: store, Exec: httpapi.NewExecutor(eng, kserve.Limits{MaxElements: cfg.MaxTensorElements}), Clock: clk,
		Logger: log.With("component", "runner"), LeaseFor: cfg.BatchLease,
		LeaseBatch: runnerLeaseBatch, Concurrency: runnerConcurrency,
		GuaranteedShare: cfg.BulkGuaranteedShare,
		Pace: func(model string, share float64) {
			if m, err := eng.Model(model); err == nil {
				m.Sched.SetBulkShare(share)
			}
		},
		ThreadInit: func() {
			if err := engine.IdleThread(); err != nil {
				log.Warn("batch runner bookkeeping runs at normal priority", "err", err)
			}
		},
	})
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &jobsStack{store: store, runner: run, cancel: cancel, done: make(chan error, 1)}
	go func() { j.done <- run.Run(ctx) }()
	return j, nil
}

// The batch runner's leases and items in flight: enough in flight to keep
// several full bulk batches queued, and well under the bulk queue limit
// (1,024 requests) so that items are not refused. What is in flight is
// what a crash makes run again (make crash-test); leases of 512 with 1,024
// in flight measured within noise of these on the job benchmark.
const (
	runnerLeaseBatch  = 128
	runnerConcurrency = 512
)

// openStore opens the store cfg.Store names: SQLite in the data folder
// (the default), or a shared PostgreSQL database by URL.
func openStore(cfg config.Config, clk clock.Clock) (jobs.Store, error) {
	if postgres.IsURL(cfg.Store) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return postgres.Open(ctx, cfg.Store, clk)
	}
	if cfg.Store != "" && cfg.Store != "sqlite" {
		return nil, errors.New("unknown store (want sqlite or a postgres:// URL)")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, err
	}
	return sqlite.Open(filepath.Join(cfg.DataDir, "jobs.db"), clk)
}

// storeKind names a store setting for logs, without the URL (it may hold
// a password).
func storeKind(store string) string {
	if postgres.IsURL(store) {
		return "postgres"
	}
	return "sqlite"
}

// Close stops the runner (it records its in-flight items and releases its
// leases) and then closes the store. The schedulers must still run.
func (j *jobsStack) Close(timeout time.Duration) error {
	j.cancel()
	var err error
	select {
	case err = <-j.done:
	case <-time.After(timeout):
		err = fmt.Errorf("batch runner did not stop within %s", timeout)
	}
	if cerr := j.store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}
