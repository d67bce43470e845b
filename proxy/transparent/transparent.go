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
	"time"
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
// destination. Closing ln stops accepting and lets the open connections
// finish: Serve returns once their handlers have. ctx being done, or ln
// failing, stops accepting and closes every open connection at once. A
// temporary accept error (out of file descriptors) is retried after a
// pause, as net/http does. A connection without an original destination
// is logged and closed.
func Serve(ctx context.Context, ln net.Listener, h Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	closeAll := func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		closeAll()
	})
	defer stop()
	self, _ := netip.ParseAddrPort(ln.Addr().String())
	var err error
	var pause time.Duration
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			if !temporary(err) || ctx.Err() != nil {
				break
			}
			// A sandbox can use up the file descriptors: that must not end
			// the listener for every instance.
			pause = min(max(2*pause, minPause), maxPause)
			log.Warn("transparent listener: accept failed; retrying", "error", err.Error(), "retry_in", pause.String())
			t := time.NewTimer(pause)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
			}
			break
		}
		pause = 0
		src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		dst, derr := originalDst(c)
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
	closed := errors.Is(err, net.ErrClosed)
	if closed && ctx.Err() == nil { // the caller closed ln: drain until ctx is done
		drained := make(chan struct{})
		go func() {
			wg.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-ctx.Done():
		}
	}
	cancel()
	stop()
	// The AfterFunc may not have run if Accept failed first: close the
	// connections here too.
	closeAll()
	wg.Wait()
	if parent.Err() != nil || closed {
		return nil
	}
	return err
}

// Pauses after a temporary accept error, doubling: net/http's.
const (
	minPause = 5 * time.Millisecond
	maxPause = time.Second
)

// originalDst is OriginalDst; tests stand in for the kernel.
var originalDst = OriginalDst

// temporary reports an accept error worth retrying (EMFILE, ENFILE,
// ECONNABORTED...), as net/http's Server judges it.
func temporary(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
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
