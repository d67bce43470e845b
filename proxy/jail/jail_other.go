//go:build !linux

package jail

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/outbound-dev/outbound/internal/platform"
)

// ErrUnsupported: the jail needs Linux namespaces and a TUN device.
var ErrUnsupported = platform.Unsupported("--jail", Needs)

// ServeFunc serves one captured TCP connection to host and port.
type ServeFunc func(ctx context.Context, conn net.Conn, host string, port int)

// StackOptions configure the jail's stack (Linux only).
type StackOptions struct {
	Serve  ServeFunc
	Proxy  netip.AddrPort
	Logger *slog.Logger
}

// Options configure Prepare (Linux only).
type Options struct {
	Argv             []string
	Stdin            io.Reader
	Stdout, Stderr   io.Writer
	Dir              string
	HandshakeTimeout time.Duration
}

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
