//go:build !linux

package platform

import "os/exec"

// DiesWithParent says whether DieWithParent is enforced by the kernel here.
// Only Linux has a parent-death signal; elsewhere a parent killed with
// SIGKILL cannot take its children with it.
const DiesWithParent = false

// DieWithParent does nothing on this system: see DiesWithParent.
func DieWithParent(cmd *exec.Cmd) {}
