package main

import "syscall"

// dieWithParent makes the kernel kill a child when this process dies, even
// by SIGKILL, so no child outlives it.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
