// Package ort runs ONNX models with ONNX Runtime, loaded at run time from a
// shared library through github.com/yalue/onnxruntime_go (cgo).
//
// The shared library is not linked in: New takes its path (see
// internal/assets.ORTLibrary for a pinned build). Built with CGO_ENABLED=0
// the package still compiles, and New reports that it is unavailable.
package ort
