package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/engine"
)

// benchInterference measures what a bulk session at idle OS priority
// costs real-time batches on the same cores, without any server: one
// real-time loop per instance runs batches of --interference-batch with a
// short pause between them (leaving the idle moments bulk work uses), first
// alone, then beside a bulk-size loop on an idle-priority thread, then
// beside an idle-priority loop that only spins (CPU and no memory traffic).
// The first separates scheduling from cache and memory contention.
func benchInterference(ctx context.Context, f *benchFlags, stdout io.Writer, log *slog.Logger) error {
	_, m, rt, err := modelRuntime(&f.serve, f.model, log)
	if err != nil {
		return err
	}
	open := func() (backend.Session, error) { return rt.Open(m.Path, backend.Options{Threads: m.Threads}) }
	var fg []backend.Session
	defer func() {
		for _, s := range fg {
			_ = s.Close()
		}
	}()
	for range max(m.Instances, 1) {
		s, err := open()
		if err != nil {
			return err
		}
		fg = append(fg, s)
	}
	rng := rand.New(rand.NewPCG(f.seed, 3))
	fgIn := engine.SyntheticInputs(fg[0].Inputs(), f.interfBatch, rng)
	bgIn := engine.SyntheticInputs(fg[0].Inputs(), min(64, m.MaxBatchSize), rng)
	const pause = 500 * time.Microsecond

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "background\tbatch\tp50_ms\tp99_ms\tbatches\tp50 vs alone\tp99 vs alone\t\n")
	var base [2]float64
	for i, mode := range []string{"none", "bulk-idle", "spin-idle"} {
		var stop atomic.Bool
		var bg sync.WaitGroup
		bgErr := make(chan error, 1)
		if mode != "none" {
			bg.Go(func() {
				if err := engine.IdleThread(); err != nil {
					bgErr <- err
					return
				}
				if mode == "spin-idle" {
					x := 0
					for !stop.Load() {
						x++
					}
					return
				}
				s, err := open()
				if err != nil {
					bgErr <- err
					return
				}
				defer s.Close()
				for !stop.Load() {
					if _, err := s.Run(ctx, bgIn); err != nil {
						bgErr <- err
						return
					}
				}
			})
			time.Sleep(300 * time.Millisecond)
		}
		end := time.Now().Add(f.duration)
		lats := make([][]time.Duration, len(fg))
		var wg sync.WaitGroup
		for k, s := range fg {
			wg.Go(func() {
				for time.Now().Before(end) && ctx.Err() == nil {
					t := time.Now()
					if _, err := s.Run(ctx, fgIn); err != nil {
						return
					}
					lats[k] = append(lats[k], time.Since(t))
					time.Sleep(pause)
				}
			})
		}
		wg.Wait()
		stop.Store(true)
		bg.Wait()
		select {
		case err := <-bgErr:
			return fmt.Errorf("background %s: %w", mode, err)
		default:
		}
		all := slices.Concat(lats...)
		if len(all) == 0 {
			return fmt.Errorf("no batch ran")
		}
		slices.Sort(all)
		p50, p99 := ms(all[len(all)/2]), ms(all[len(all)*99/100])
		if i == 0 {
			base = [2]float64{p50, p99}
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%d\t%.3f\t%.3f\t\n", mode, f.interfBatch, p50, p99, len(all), p50/base[0], p99/base[1])
	}
	return tw.Flush()
}
