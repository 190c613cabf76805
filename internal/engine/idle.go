package engine

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/batching"
)

// idleExecutor runs a bulk-only session on an OS thread of its own at idle
// priority (Linux SCHED_IDLE): the kernel runs it only on CPU time no other
// thread wants and preempts it as soon as one does, so bulk batches use
// exactly the capacity real-time work leaves, and a real-time batch never
// waits for a bulk one to end. The session is opened on that thread, so
// that threads the runtime starts for it inherit the priority; it is opened
// and warmed up at normal priority, and the thread drops to idle priority
// when the executor starts serving (Idle): a saturated machine would
// otherwise never give a starting server the CPU time to open and warm its
// bulk sessions.
//
// Only the runtime call runs on the idle thread; batch formation, under
// the scheduler's lock, stays on the worker goroutine at normal priority,
// so that a preempted idle thread never holds a lock real-time work needs.
//
// Its busy time per batch is the CPU time of the thread that ran it (for a
// single-threaded session, all of the batch's compute), not the wall time,
// which would count the preemptions.
type idleExecutor struct {
	sess     backend.Session
	calls    chan idleCall
	cpuTimed bool
}

type idleCall struct {
	ctx  context.Context //nolint:containedctx // a call message to the idle thread
	in   []infergate.Tensor
	done chan idleResult
	// demote, instead of a batch, moves the thread to idle priority.
	demote bool
}

type idleResult struct {
	outs []infergate.Tensor
	busy time.Duration
	err  error
}

var _ batching.TimedExecutor = (*idleExecutor)(nil)

// IdleThread locks the calling goroutine to its OS thread for the rest of
// its life and moves that thread to idle priority (Linux SCHED_IDLE): it
// runs only on CPU time no other thread wants. For background goroutines
// whose work may wait, such as a batch job's bookkeeping. The thread exits
// with the goroutine. It reports whether the priority was set.
//
// Such a goroutine may hold a Go scheduler slot (P) while the kernel keeps
// its thread waiting; a server using it should run with GOMAXPROCS above
// the number of CPUs (see cmd/infergate).
func IdleThread() error {
	runtime.LockOSThread()
	return setIdlePriority()
}

// newIdleExecutor starts the idle thread and opens the session on it with
// open. threads is the session's thread count: its busy time is thread CPU
// time only when it is 1.
func newIdleExecutor(open func() (backend.Session, error), threads int, log *slog.Logger) (*idleExecutor, error) {
	x := &idleExecutor{calls: make(chan idleCall)}
	opened := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with the goroutine, so that
		// its priority never passes to other goroutines.
		runtime.LockOSThread()
		sess, err := open()
		if err != nil {
			opened <- err
			return
		}
		x.sess = sess
		_, ok := threadCPUTime()
		x.cpuTimed = ok && threads == 1
		opened <- nil
		for c := range x.calls {
			var r idleResult
			if c.demote {
				if err := setIdlePriority(); err != nil {
					log.Warn("bulk instance runs at normal priority", "err", err)
				}
				c.done <- r
				continue
			}
			t0, _ := threadCPUTime()
			r.outs, r.err = runRecover(c.ctx, sess, c.in)
			if x.cpuTimed {
				t1, _ := threadCPUTime()
				r.busy = t1 - t0
			}
			c.done <- r
		}
	}()
	if err := <-opened; err != nil {
		return nil, err
	}
	return x, nil
}

// Idle moves the executor's thread to idle priority, once its session is
// open and warm.
func (x *idleExecutor) Idle() {
	done := make(chan idleResult, 1)
	x.calls <- idleCall{demote: true, done: done}
	<-done
}

// Run implements batching.Executor.
func (x *idleExecutor) Run(ctx context.Context, in []infergate.Tensor) ([]infergate.Tensor, error) {
	outs, _, err := x.RunTimed(ctx, in)
	return outs, err
}

// RunTimed implements batching.TimedExecutor. busy is 0 (the scheduler then
// uses wall time) where thread CPU time is not measured.
func (x *idleExecutor) RunTimed(ctx context.Context, in []infergate.Tensor) ([]infergate.Tensor, time.Duration, error) {
	done := make(chan idleResult, 1)
	x.calls <- idleCall{ctx: ctx, in: in, done: done}
	r := <-done
	return r.outs, r.busy, r.err
}

// Session returns the session the executor runs.
func (x *idleExecutor) Session() backend.Session { return x.sess }

// Close stops the idle thread and closes the session. The scheduler must
// be closed first: no Run may be in progress or follow.
func (x *idleExecutor) Close() error {
	close(x.calls)
	return x.sess.Close()
}

// runRecover runs a batch on sess, turning a panic into an error: on the
// idle thread no caller's recover could catch it, and the process would
// die.
func runRecover(ctx context.Context, sess backend.Session, in []infergate.Tensor) (outs []infergate.Tensor, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = infergate.Errorf(infergate.EInternal, "the runtime panicked: %v\n%s", v, debug.Stack())
		}
	}()
	return sess.Run(ctx, in)
}
