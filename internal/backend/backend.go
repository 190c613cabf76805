// Package backend defines the small interface every model runtime implements:
// open a model file into a session, run a batch through it.
//
// Implementations: gorun (pure Go, no cgo), ort (ONNX Runtime via cgo),
// fake (controllable latency and errors, for tests).
package backend

import (
	"context"

	"github.com/infergate/infergate"
)

// Options configure one session (one model instance).
type Options struct {
	// Threads is the intra-op thread count of the session. Optional.
	// 0 lets the runtime choose.
	Threads int
}

// Session is one loaded copy of a model. A session runs one batch at a time;
// callers serialise calls to Run.
type Session interface {
	// Inputs and Outputs describe the model's tensors; a dimension of -1 is
	// dynamic (the first one is the batch dimension for batchable models).
	Inputs() []infergate.TensorSpec
	Outputs() []infergate.TensorSpec
	// Run executes the model. inputs are in the order of Inputs() and already
	// validated against it; the returned tensors are in the order of
	// Outputs(), freshly allocated and owned by the caller.
	Run(ctx context.Context, inputs []infergate.Tensor) ([]infergate.Tensor, error)
	Close() error
}

// Runtime opens models.
type Runtime interface {
	// Name is a short name for logs and metrics: "onnxruntime", "gorun".
	Name() string
	Open(path string, opts Options) (Session, error)
}
