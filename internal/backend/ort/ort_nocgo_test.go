//go:build !cgo

package ort

import (
	"strings"
	"testing"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/backend"
)

func TestNewWithoutCgo(t *testing.T) {
	r, err := New("/any/libonnxruntime.so")
	if err == nil || r != nil || !strings.Contains(err.Error(), "built without cgo") {
		t.Fatalf("New = %v, %v", r, err)
	}
	if infergate.ErrorCode(err) != infergate.EUnavailable {
		t.Errorf("code %s", infergate.ErrorCode(err))
	}
	if _, err := (&Runtime{}).Open("m.onnx", backend.Options{}); err == nil {
		t.Error("Open succeeded")
	}
}
