// Package jail runs a command in its own network namespace whose only way
// out is outbound: `outbound run --jail`.
//
// The jail's namespace holds its own loopback and one TUN device, tun0,
// that every route points at. Outbound reads tun0's packets in its own
// process, through a userspace TCP/IP stack (gVisor's netstack), so nothing
// on the host is configured: no iptables, no `ip` binary, no kernel module.
// Each TCP connection, to any address and port, is handed to the proxy as a
// captured connection; DNS on port 53 (UDP and TCP, any address) is answered
// from a pool of private addresses that map back to names (package fakedns);
// every other packet is dropped.
//
// The namespaces are made by a child: outbound re-executes itself (the
// hidden `jail-child` command) in new user, network and mount namespaces,
// where it creates tun0, points /etc/resolv.conf at outbound with a bind
// mount, passes the TUN file descriptor back over a Unix socket
// (SCM_RIGHTS), and then executes the command. As root the user namespace
// maps every id to itself, so the command keeps its identity but holds no
// capability over the host's namespaces and cannot leave the jail with
// setns.
//
// It does not decide anything: captured connections go to the Serve
// function it is given (the proxy's ServeCaptured).
package jail

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/outbound-dev/outbound/proxy/fakedns"
)

// The jail's address plan. Everything is inside 198.18.0.0/15 (RFC 2544,
// reserved for benchmarks, never routed on the internet) and a ULA prefix.
var (
	// Gateway is outbound's own address in the jail: the nameserver in
	// resolv.conf, and the proxy listener at ProxyPort.
	Gateway = netip.MustParseAddr("198.18.0.1")
	// Self is the jail's address on tun0.
	Self = netip.MustParseAddr("198.18.0.2")
	// Self6 is the jail's IPv6 address on tun0.
	Self6 = netip.MustParseAddr("fd6a:6169:6c00::2")
	// Pool is the prefix names are mapped into, from PoolFirst on.
	Pool      = netip.MustParsePrefix("198.18.0.0/15")
	PoolFirst = netip.MustParseAddr("198.18.1.0")
)

// Needs is what the jail needs of the kernel; elsewhere --jail fails
// with platform.Unsupported("--jail", Needs).
const Needs = "Linux network namespaces and a TUN device"

// ProxyPort is the port of the proxy listener at Gateway: connections to
// it reach outbound's real proxy listener, so clients that honour
// HTTP_PROXY keep working inside the jail.
const ProxyPort = 3128

// MTU of tun0 and of the stack: near the largest a TUN device takes, so
// bulk transfers take few packets (nothing on the path is a real link).
// Measured on a loaded 2-core machine, a 256 MiB download through the jail
// ran at 480-620 MB/s with it, against 360-490 MB/s at 16 KiB.
const MTU = 65520

// ChildVerb is the hidden command that runs ChildMain: outbound's main, or
// a test binary's TestMain, must dispatch it.
const ChildVerb = "jail-child"

// TUN is the name of the jail's device.
const TUN = "tun0"

// Options configure Prepare.
type Options struct {
	Argv             []string // the command and its arguments
	Stdin            io.Reader
	Stdout, Stderr   io.Writer
	Dir              string        // a private directory for the jail's resolv.conf
	HandshakeTimeout time.Duration // for the child's setup; default 30s
}

// ServeFunc serves one captured TCP connection to host (a normalised name
// or an IP literal) and port, until it ends.
type ServeFunc func(ctx context.Context, conn net.Conn, host string, port int)

// StackOptions configure a Stack.
type StackOptions struct {
	// Serve handles every captured TCP connection. Required.
	Serve ServeFunc
	// Proxy is outbound's proxy listener: connections to Gateway:ProxyPort
	// are relayed to it. Zero leaves that port closed.
	Proxy netip.AddrPort
	// Pool maps names to the addresses DNS answers with. Nil means a pool
	// over Pool from PoolFirst.
	Pool   *fakedns.Pool
	Logger *slog.Logger
}

// ResolvConf is the content bound over /etc/resolv.conf in the jail.
func ResolvConf() string {
	return "# written by outbound run --jail: names resolve through outbound\nnameserver " + Gateway.String() + "\n"
}
