package engine

import (
	"context"
	"log/slog"
	"testing"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
	"github.com/infergate/infergate/internal/backend/fake"
)

type panicSession struct{ fake.Session }

func (*panicSession) Run(context.Context, []infergate.Tensor) ([]infergate.Tensor, error) {
	panic("runtime bug")
}

// TestIdleExecutorSurvivesAPanic: a panic on the idle thread, where no
// caller's recover reaches, is an error and the thread serves on.
func TestIdleExecutorSurvivesAPanic(t *testing.T) {
	sess := &panicSession{}
	x, err := newIdleExecutor(func() (backend.Session, error) { return sess, nil }, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for range 2 {
		if _, err := x.Run(t.Context(), []infergate.Tensor{fake.Input(4, 1)}); infergate.ErrorCode(err) != infergate.EInternal {
			t.Fatalf("Run = %v, want an internal error", err)
		}
	}
}
