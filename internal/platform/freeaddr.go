package platform

import (
	"fmt"
	"net"
)

// FreeLoopbackAddr returns a loopback address with a port the kernel had
// free a moment ago, for a child process (outbound serve, redis-server)
// that must be told its port before it starts.
func FreeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
