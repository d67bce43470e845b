package app

import (
	"context"
	"net"
	"net/netip"

	"github.com/outbound-dev/outbound/proxy"
)

// ServeCaptured serves a connection captured for instance id (by the jail
// of `run --jail`) to host and port, decided exactly as a proxied one. An
// unknown or deleted instance's connection is closed.
func (s *App) ServeCaptured(ctx context.Context, conn net.Conn, id, host string, port int) {
	inst, ok := s.registry.Get(id)
	if !ok || !inst.Alive() {
		s.log.Warn("captured connection for an instance that does not exist; closed", "instance", id, "host", host, "port", port)
		conn.Close()
		return
	}
	s.proxy.ServeCaptured(ctx, conn, proxy.Capture{Instance: inst, Host: host, Port: port, Via: "jail"})
}

// ProxyDialAddr is where a local client reaches the proxy listener: its
// address, with an unspecified IP (0.0.0.0, ::) taken as loopback.
func (s *App) ProxyDialAddr() netip.AddrPort {
	ap, err := netip.ParseAddrPort(s.proxyLn.Addr().String())
	if err != nil {
		return netip.AddrPort{}
	}
	if ap.Addr().IsUnspecified() {
		lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
		if ap.Addr().Is6() {
			lo = netip.IPv6Loopback()
		}
		ap = netip.AddrPortFrom(lo, ap.Port())
	}
	return ap
}
