package pgtest

import (
	"os/exec"
	"syscall"
)

// sigQuit asks postgres for an immediate shutdown.
var sigQuit = syscall.SIGQUIT

// asUser makes cmd run as uid:gid when they are not -1, and get an
// immediate-shutdown signal should this process die without stopping it.
func asUser(cmd *exec.Cmd, uid, gid int) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT}
	if uid >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
}
