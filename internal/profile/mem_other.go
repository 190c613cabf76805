//go:build !linux

package profile

func residentBytes() (int64, bool) { return 0, false }
func peakBytes() (int64, bool)     { return 0, false }
func resetPeak() bool              { return false }
