//go:build unix && !linux

package pgtest

import (
	"os/exec"
	"syscall"
)

// sigQuit asks postgres for an immediate shutdown.
var sigQuit = syscall.SIGQUIT

// asUser makes cmd run as uid:gid when they are not -1.
func asUser(cmd *exec.Cmd, uid, gid int) {
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
}
