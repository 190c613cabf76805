package engine

import (
	"context"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/backend/fake"
)

// policySession records the scheduling policy of the thread that runs it
// and burns some CPU.
type policySession struct {
	fake.Session
	policy, openPolicy int
}

func schedPolicy() int {
	p, _, _ := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, 0, 0, 0)
	return int(p)
}

func (p *policySession) Run(ctx context.Context, in []infergate.Tensor) ([]infergate.Tensor, error) {
	p.policy = schedPolicy()
	x := 0
	for i := range 2_000_000 {
		x += i
	}
	_ = x
	return p.Session.Run(ctx, in)
}

func TestIdleExecutorRunsAtIdlePriority(t *testing.T) {
	sess := &policySession{}
	x, err := newIdleExecutor(func() (backend.Session, error) {
		sess.openPolicy = schedPolicy()
		return sess, nil
	}, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Opened and warmed at normal priority, then idle.
	if _, err := x.Run(t.Context(), []infergate.Tensor{fake.Input(4, 1, 2)}); err != nil {
		t.Fatal(err)
	}
	if sess.openPolicy != 0 || sess.policy != 0 {
		t.Errorf("opened under policy %d and warmed under %d, want SCHED_OTHER", sess.openPolicy, sess.policy)
	}
	x.Idle()
	start := time.Now()
	outs, busy, err := x.RunTimed(t.Context(), []infergate.Tensor{fake.Input(4, 1, 2)})
	wall := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if got := fake.Floats(outs[0]); len(got) != 2 || got[0] != 4 || got[1] != 8 {
		t.Errorf("outputs %v, want [4 8]", got)
	}
	if sess.policy != schedIdle {
		t.Errorf("ran under policy %d after Idle, want SCHED_IDLE (%d)", sess.policy, schedIdle)
	}
	// Busy is the thread's CPU time: positive and never more than the
	// call's wall time.
	if busy <= 0 || busy > wall {
		t.Errorf("busy %v for a call of %v wall", busy, wall)
	}
	// The caller's own thread keeps its policy.
	if p := schedPolicy(); p != 0 {
		t.Errorf("caller's policy is %d, want SCHED_OTHER", p)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
}
