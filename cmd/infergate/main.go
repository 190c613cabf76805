// Command infergate serves ONNX models over the KServe v2 protocol with
// per-class dynamic batching and measured cost, and benchmarks them.
//
//	infergate serve [--addr HOST:PORT] [--data-dir DIR] [--config FILE]
//	infergate bench --model mlp --policy single|time|size|hybrid --rate N --duration D [--json]
//	infergate model gen [--out FILE]
//	infergate batch submit|list|status|cancel|results [--url URL] ...
//	infergate fetch            fetch the ONNX Runtime library into the cache
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: infergate <command> [flags]

commands:
  serve       serve models (default: the reference model "mlp")
  bench       load-test a server (in-process or --url) or the runtime alone (--raw)
  batch       submit, list, inspect, cancel and download batches (--url)
  profile     measure a model per batch size and configuration; choose a batch size
  plan        simulate a workload on each mode and setting; recommend the cheapest that meets the SLO
  model gen   write the reference ONNX model
  fetch       fetch the pinned ONNX Runtime library into the cache folder
  version     print the version

Run 'infergate <command> -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "infergate:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "model":
		if len(args) < 2 || args[1] != "gen" {
			return fmt.Errorf("usage: infergate model gen [--out FILE]")
		}
		return runModelGen(args[2:], stdout)
	case "batch":
		return runBatch(ctx, args[1:], stdout, stderr)
	case "profile":
		return runProfile(ctx, args[1:], stdout, stderr)
	case "plan":
		return runPlan(ctx, args[1:], stdout, stderr)
	case "fetch":
		return runFetch(ctx, args[1:], stdout)
	case "version":
		fmt.Fprintln(stdout, version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// newLogger returns a text logger at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
