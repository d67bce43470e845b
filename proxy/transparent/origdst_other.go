//go:build !linux

package transparent

import (
	"net"
	"net/netip"

	"github.com/outbound-dev/outbound/internal/platform"
)

// ErrUnsupported: original destinations come from Linux connection
// tracking.
var ErrUnsupported = platform.Unsupported("--transparent", Needs)

// OriginalDst fails: only Linux keeps original destinations.
func OriginalDst(net.Conn) (netip.AddrPort, error) { return netip.AddrPort{}, ErrUnsupported }

// ListenConfig is the default configuration.
func ListenConfig() net.ListenConfig { return net.ListenConfig{} }
