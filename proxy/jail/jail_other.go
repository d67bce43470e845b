//go:build !linux

package jail

import (
	"io"
	"os"

	"github.com/outbound-dev/outbound/internal/platform"
)

// ErrUnsupported: the jail needs Linux namespaces and a TUN device.
var ErrUnsupported = platform.Unsupported("--jail", Needs)

// Pending is a built jail (Linux only).
type Pending struct{}

// Cmd is a jailed command (Linux only).
type Cmd struct{}

// Prepare fails: there is no jail on this system.
func Prepare(Options) (*Pending, error) { return nil, ErrUnsupported }

// Abort does nothing: there is no jail on this system.
func (*Pending) Abort() {}

// Start fails: there is no jail on this system.
func (*Pending) Start([]string, StackOptions) (*Cmd, error) { return nil, ErrUnsupported }

// Process is nil: there is no jail on this system.
func (*Cmd) Process() *os.Process { return nil }

// Wait fails: there is no jail on this system.
func (*Cmd) Wait() error { return ErrUnsupported }

// ChildMain fails: there is no jail on this system.
func ChildMain(args []string, stderr io.Writer) int {
	io.WriteString(stderr, "outbound: "+ErrUnsupported.Error()+"\n")
	return 1
}
