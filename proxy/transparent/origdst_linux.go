package transparent

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// OriginalDst is where a redirected TCP connection was going, from the
// connection tracking entry (SO_ORIGINAL_DST; IP6T_SO_ORIGINAL_DST for
// IPv6). Under TPROXY, where nothing was rewritten, that is the socket's
// own local address, which is returned when the lookup fails.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w (%T is not a TCP connection)", ErrNoOriginalDst, c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if local.Addr().Unmap().Is4() {
			var m *unix.IPv6Mreq // 20 bytes: room for a sockaddr_in
			m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if serr == nil {
				b := m.Multiaddr // sockaddr_in: family, port (big endian), address
				dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4]))
			}
			return
		}
		var info *unix.IPv6MTUInfo // starts with a sockaddr_in6
		info, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, unix.SO_ORIGINAL_DST)
		if serr == nil {
			p := info.Addr.Port
			port := binary.BigEndian.Uint16([]byte{byte(p), byte(p >> 8)})
			dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), port)
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		if local.IsValid() {
			return local, nil // TPROXY: the socket took the original address
		}
		return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrNoOriginalDst, serr)
	}
	return dst, nil
}

// ListenConfig returns a listen configuration that asks for IP_TRANSPARENT,
// which TPROXY needs, where the process may set it (CAP_NET_ADMIN); without
// it, REDIRECT still works.
func ListenConfig() net.ListenConfig {
	return net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		c.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		})
		return nil
	}}
}
