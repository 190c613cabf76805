package engine

import (
	"log/slog"
	"runtime"
	"syscall"
)

// lowerComputePriority pins the calling worker goroutine to its OS thread
// and gives that thread the nice value nice, so that the model compute it
// runs (ONNX Runtime computes on the calling thread) yields the CPU to the
// HTTP server under contention. The thread stays locked for the worker's
// life and exits with it.
func lowerComputePriority(nice int, log *slog.Logger) {
	if nice <= 0 {
		return
	}
	runtime.LockOSThread()
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), nice); err != nil {
		log.Warn("could not lower the compute thread's priority", "nice", nice, "err", err)
	}
}
