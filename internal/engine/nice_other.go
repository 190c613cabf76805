//go:build !linux

package engine

import "log/slog"

// lowerComputePriority does nothing outside Linux.
func lowerComputePriority(int, *slog.Logger) {}
