// Package transparent is the listener of `serve --transparent`: it accepts
// connections that a firewall redirected to outbound (iptables or nftables
// REDIRECT, or TPROXY) and recovers where each was going, from the socket
// (SO_ORIGINAL_DST). Who is asking (the instance, by client address) and
// what to do with the connection are its handler's business.
package transparent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
)

// Handler serves one redirected connection from src that was addressed to
// dst, until it ends.
type Handler func(ctx context.Context, conn net.Conn, src, dst netip.AddrPort)

// Needs is what the listener needs of the kernel; elsewhere
// --transparent fails with platform.Unsupported("--transparent", Needs).
const Needs = "Linux connection tracking for the original destination (SO_ORIGINAL_DST)"

// ErrNoOriginalDst: the connection was not redirected (it came to the
// listener's own address), or the system cannot say where it was going.
var ErrNoOriginalDst = errors.New("no original destination: the connection was not redirected to this listener")

// Serve accepts connections on ln and hands each to h with its original
// destination, until ctx is done or ln fails; then it closes every open
// connection and waits for their handlers. A connection without an
// original destination is logged and closed.
func Serve(ctx context.Context, ln net.Listener, h Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	self, _ := netip.ParseAddrPort(ln.Addr().String())
	var err error
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			break
		}
		src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		dst, derr := OriginalDst(c)
		if derr == nil && isListener(dst, self) {
			derr = ErrNoOriginalDst
		}
		if derr != nil {
			log.Warn("transparent listener: connection closed", "client", src, "error", derr)
			c.Close()
			continue
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			break
		}
		conns[c] = struct{}{}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			h(ctx, c, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()))
		}()
	}
	cancel()
	stop()
	// The AfterFunc may not have run if Accept failed first: close the
	// connections here too.
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// isListener reports whether dst is the listener's own address (a client
// that connected directly): an unspecified listener IP matches any IP on
// its port.
func isListener(dst, self netip.AddrPort) bool {
	if dst.Port() != self.Port() {
		return false
	}
	return self.Addr().IsUnspecified() || dst.Addr().Unmap() == self.Addr().Unmap()
}
