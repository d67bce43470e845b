// Package netguard owns the private-network guard: the decision, at dial
// time and on the resolved IP, whether an upstream connection may be made.
// It runs in net.Dialer.Control, after DNS, so the IP that is checked is the
// IP that is dialled and a name cannot be re-resolved in between.
//
// By default only globally reachable unicast addresses pass. The operator can
// open private ranges (AllowPrivate, Allow), but the proxy's own listeners are
// always refused so a request can never loop back into the proxy. It does not
// resolve names or know about policy; the host rules live in handlers.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// Options configure a Guard.
type Options struct {
	// AllowPrivate lets dials reach every non-public address (loopback,
	// private, link-local, ...), except the proxy's own addresses.
	AllowPrivate bool
	// Allow opens these ranges, except the proxy's own addresses.
	Allow []netip.Prefix
	// Self are the proxy's own listener and admin addresses. They are always
	// refused. An unspecified address (0.0.0.0:3128) stands for every local
	// address at that port.
	Self []netip.AddrPort
}

// Guard decides whether an upstream dial may proceed. Safe for concurrent use.
type Guard struct {
	allowPrivate bool
	allow        []netip.Prefix
	self         atomic.Pointer[[]netip.AddrPort]
	local        []netip.Addr // this host's interface addresses, for unspecified Self entries
}

// New builds a Guard.
func New(opts Options) *Guard {
	g := &Guard{allowPrivate: opts.AllowPrivate}
	for _, p := range opts.Allow {
		g.allow = append(g.allow, p.Masked())
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					g.local = append(g.local, ip.Unmap())
				}
			}
		}
	}
	g.AddSelf(opts.Self...)
	return g
}

// AddSelf adds proxy-owned addresses (say, once a listener is bound to an
// ephemeral port). They are refused from then on.
func (g *Guard) AddSelf(addrs ...netip.AddrPort) {
	for {
		old := g.self.Load()
		var next []netip.AddrPort
		if old != nil {
			next = append(next, *old...)
		}
		for _, a := range addrs {
			next = append(next, netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port()))
		}
		if g.self.CompareAndSwap(old, &next) {
			return
		}
	}
}

// DenyError is a refused dial. The proxy logs Reason and answers 502.
type DenyError struct {
	Addr   netip.AddrPort
	Reason string // e.g. "loopback", "private", "self", "link-local via nat64"
}

func (e *DenyError) Error() string {
	return fmt.Sprintf("netguard: dial to %s refused: %s", e.Addr, e.Reason)
}

// IsDenyError reports whether err is, or wraps, a *DenyError.
func IsDenyError(err error) bool {
	var d *DenyError
	return errors.As(err, &d)
}

// Check decides one dial target. It returns nil or a *DenyError.
func (g *Guard) Check(ap netip.AddrPort) error {
	ip := ap.Addr().WithZone("")
	if g.IsSelf(netip.AddrPortFrom(ip, ap.Port())) {
		return &DenyError{Addr: ap, Reason: "self"}
	}
	reason := Classify(ip)
	if reason == "" || g.allowPrivate {
		return nil
	}
	u := ip.Unmap()
	for _, p := range g.allow {
		if p.Contains(ip) || p.Contains(u) {
			return nil
		}
	}
	return &DenyError{Addr: ap, Reason: reason}
}

// IsSelf reports whether a dial to ap would reach one of the proxy's own
// listeners.
func (g *Guard) IsSelf(ap netip.AddrPort) bool {
	selfs := g.self.Load()
	if selfs == nil {
		return false
	}
	ip := ap.Addr().Unmap().WithZone("")
	for _, s := range *selfs {
		if s.Port() != ap.Port() {
			continue
		}
		switch {
		case s.Addr() == ip:
			return true
		case ip.IsUnspecified(): // connecting to 0.0.0.0 or :: reaches a local listener
			return true
		case s.Addr().IsUnspecified() && g.isLocal(ip):
			return true
		}
	}
	return false
}

func (g *Guard) isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() {
		return true
	}
	for _, l := range g.local {
		if l == ip {
			return true
		}
	}
	return false
}

// Control is for net.Dialer.Control: it checks the resolved address of each
// connection attempt.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// Not an IP:port (a unix socket, say): never an upstream we allow.
		return &DenyError{Reason: fmt.Sprintf("unparsable %s address %q", network, address)}
	}
	return g.Check(ap)
}

// ControlAllowing is Control with an operator's opt-in for one dial: the
// addresses in allow pass even when they are not public (a --resolve or
// --connect-to mapping names them), except the proxy's own. Any other
// address is checked as by Control. Use it only on the dialer of that
// mapping, so the opt-in never reaches another name, literal or port.
func (g *Guard) ControlAllowing(allow ...netip.AddrPort) func(network, address string, c syscall.RawConn) error {
	want := make([]netip.AddrPort, len(allow))
	for i, a := range allow {
		want[i] = netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port())
	}
	return func(network, address string, c syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return g.Control(network, address, c)
		}
		got := netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
		for _, w := range want {
			if got == w {
				if g.IsSelf(got) {
					return &DenyError{Addr: ap, Reason: "self"}
				}
				return nil
			}
		}
		return g.Check(ap)
	}
}

// Classify names why ip is not a public unicast address, or returns "" if it
// is one. Addresses that embed an IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96,
// 6to4) are judged by the address they embed.
func Classify(ip netip.Addr) string {
	ip = ip.WithZone("")
	if ip.Is4() {
		return classify4(ip)
	}
	if ip.Is4In6() {
		return via(classify4(ip.Unmap()), "ipv4-mapped")
	}
	for _, r := range v6Ranges {
		if r.prefix.Contains(ip) {
			if r.embed == nil {
				return r.reason
			}
			return via(classify4(r.embed(ip)), r.reason)
		}
	}
	// Only 2000::/3 is allocated as global unicast.
	if !globalUnicast6.Contains(ip) {
		return "not global unicast"
	}
	return ""
}

func via(reason, form string) string {
	if reason == "" {
		return ""
	}
	return reason + " via " + form
}

func classify4(ip netip.Addr) string {
	for _, r := range v4Ranges {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	return ""
}

type v4Range struct {
	prefix netip.Prefix
	reason string
}

// v4Ranges are the IPv4 special-purpose ranges (RFC 6890 and the IANA
// registry) that are not globally reachable, plus multicast.
var v4Ranges = []v4Range{
	{netip.MustParsePrefix("0.0.0.0/8"), "this network"}, // includes 0.0.0.0
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "cgnat"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"}, // includes 169.254.169.254 metadata
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "reserved"}, // IETF protocol assignments
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "reserved"}, // deprecated 6to4 relay anycast
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
}

type v6Range struct {
	prefix netip.Prefix
	reason string
	embed  func(netip.Addr) netip.Addr // the embedded IPv4 address, if judged by it
}

var globalUnicast6 = netip.MustParsePrefix("2000::/3")

// v6Ranges are checked in order; the first that contains the address decides.
var v6Ranges = []v6Range{
	{prefix: netip.MustParsePrefix("::/128"), reason: "unspecified"},
	{prefix: netip.MustParsePrefix("::1/128"), reason: "loopback"},
	{prefix: netip.MustParsePrefix("::/96"), reason: "ipv4-compatible (deprecated)"},
	{prefix: netip.MustParsePrefix("64:ff9b::/96"), reason: "nat64", embed: low32},
	// Local-use NAT64 (RFC 8215) may embed IPv4 at any RFC 6052 offset and
	// leads into the operator's own network: refused as a whole.
	{prefix: netip.MustParsePrefix("64:ff9b:1::/48"), reason: "local-use nat64"},
	{prefix: netip.MustParsePrefix("100::/64"), reason: "discard-only"},
	{prefix: netip.MustParsePrefix("2001::/32"), reason: "teredo"},
	{prefix: netip.MustParsePrefix("2001:2::/48"), reason: "benchmarking"},
	{prefix: netip.MustParsePrefix("2001:10::/28"), reason: "reserved"}, // ORCHID
	{prefix: netip.MustParsePrefix("2001:20::/28"), reason: "reserved"}, // ORCHIDv2
	{prefix: netip.MustParsePrefix("2001:db8::/32"), reason: "documentation"},
	{prefix: netip.MustParsePrefix("2002::/16"), reason: "6to4", embed: sixToFour},
	{prefix: netip.MustParsePrefix("3fff::/20"), reason: "documentation"},
	{prefix: netip.MustParsePrefix("5f00::/16"), reason: "srv6"},
	{prefix: netip.MustParsePrefix("fc00::/7"), reason: "ula"},
	{prefix: netip.MustParsePrefix("fe80::/10"), reason: "link-local"},
	{prefix: netip.MustParsePrefix("fec0::/10"), reason: "site-local (deprecated)"},
	{prefix: netip.MustParsePrefix("ff00::/8"), reason: "multicast"},
}

func low32(ip netip.Addr) netip.Addr {
	b := ip.As16()
	return netip.AddrFrom4([4]byte(b[12:16]))
}

func sixToFour(ip netip.Addr) netip.Addr {
	b := ip.As16()
	return netip.AddrFrom4([4]byte(b[2:6]))
}
