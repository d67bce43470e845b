package platform

import (
	"os/exec"
	"syscall"
)

// DiesWithParent says whether DieWithParent is enforced by the kernel here.
const DiesWithParent = true

// DieWithParent makes the kernel kill cmd (SIGKILL) when the thread that
// started it exits, so a parent killed outright leaves no child behind.
// Call it before cmd.Start; other SysProcAttr fields are kept.
func DieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
