//go:build !unix

package loadgen

// ProcessCPUSeconds is not measured on this platform.
func ProcessCPUSeconds() float64 { return 0 }
