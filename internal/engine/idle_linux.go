package engine

import (
	"syscall"
	"time"
	"unsafe"
)

const (
	schedIdle            = 5 // SCHED_IDLE, linux/sched.h
	clockThreadCPUTimeID = 3 // CLOCK_THREAD_CPUTIME_ID
)

// setIdlePriority moves the calling thread to the SCHED_IDLE policy.
// Unprivileged threads may do so.
func setIdlePriority() error {
	var param struct{ priority int32 }
	if _, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, schedIdle, uintptr(unsafe.Pointer(&param))); errno != 0 {
		return errno
	}
	return nil
}

// threadCPUTime is the CPU time the calling thread has used.
func threadCPUTime() (time.Duration, bool) {
	var ts syscall.Timespec
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
