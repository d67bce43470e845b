//go:build !linux

package serveproc

import "os/exec"

// dieWithParent does nothing where the kernel has no parent-death signal;
// Stop is then the only way the child ends.
func dieWithParent(*exec.Cmd) {}
