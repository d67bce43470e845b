package serveproc

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill the child if the harness dies, so a
// crashed run never leaves a proxy behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
