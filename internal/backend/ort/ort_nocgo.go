//go:build !cgo

package ort

import (
	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
)

var _ backend.Runtime = (*Runtime)(nil)

// Runtime is unavailable without cgo; New always fails.
type Runtime struct{}

func errNoCgo() error {
	return infergate.Errorf(infergate.EUnavailable, "onnxruntime backend unavailable: infergate was built without cgo")
}

// New fails: the onnxruntime backend needs cgo.
func New(libPath string) (*Runtime, error) { return nil, errNoCgo() }

// Name is "onnxruntime".
func (*Runtime) Name() string { return "onnxruntime" }

// Version is empty without cgo.
func (*Runtime) Version() string { return "" }

// LibraryPath is empty without cgo.
func (*Runtime) LibraryPath() string { return "" }

// Open fails: the onnxruntime backend needs cgo.
func (*Runtime) Open(path string, opts backend.Options) (backend.Session, error) {
	return nil, errNoCgo()
}
