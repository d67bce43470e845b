//go:build !linux

package transparent

import (
	"errors"
	"net"
	"net/netip"
)

// ErrUnsupported: original destinations come from Linux connection
// tracking.
var ErrUnsupported = errors.New("--transparent is Linux-only: original destinations come from Linux connection tracking (SO_ORIGINAL_DST)")

// OriginalDst fails: only Linux keeps original destinations.
func OriginalDst(net.Conn) (netip.AddrPort, error) { return netip.AddrPort{}, ErrUnsupported }

// ListenConfig is the default configuration.
func ListenConfig() net.ListenConfig { return net.ListenConfig{} }
