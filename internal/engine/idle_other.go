//go:build !linux

package engine

import (
	"errors"
	"time"
)

func setIdlePriority() error {
	return errors.New("idle thread priority is only implemented on Linux")
}

func threadCPUTime() (time.Duration, bool) { return 0, false }
