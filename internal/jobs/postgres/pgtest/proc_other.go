//go:build !unix

package pgtest

import (
	"os"
	"os/exec"
)

var sigQuit = os.Kill

func asUser(*exec.Cmd, int, int) {}
