package app

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/outbound-dev/outbound/internal/platform"
	"github.com/outbound-dev/outbound/proxy"
	"github.com/outbound-dev/outbound/proxy/netguard"
	"github.com/outbound-dev/outbound/proxy/transparent"
)

// listenTransparent binds the transparent listener, if configured. Its
// address becomes a self address: nothing is forwarded back to it.
func (s *App) listenTransparent(ctx context.Context, guard *netguard.Guard) error {
	if s.cfg.Transparent == "" {
		return nil
	}
	if err := platform.LinuxOnly("--transparent", transparent.Needs); err != nil {
		return err
	}
	lc := transparent.ListenConfig()
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Transparent)
	if err != nil {
		return fmt.Errorf("transparent listener: %w", err)
	}
	s.transLn = ln
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
		guard.AddSelf(ap)
	}
	return nil
}

// TransparentAddr is the transparent listener's address, or nil.
func (s *App) TransparentAddr() net.Addr {
	if s.transLn == nil {
		return nil
	}
	return s.transLn.Addr()
}

// serveTransparent serves the transparent listener until it is closed
// (its connections then drain) or ctx is done (they are cut); a failure
// goes to errc. The channel closes when every connection is done.
func (s *App) serveTransparent(ctx context.Context, errc chan<- error) <-chan struct{} {
	done := make(chan struct{})
	if s.transLn == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		if err := transparent.Serve(ctx, s.transLn, s.serveRedirected, s.log); err != nil {
			errc <- fmt.Errorf("transparent listener: %w", err)
		}
	}()
	return done
}

// serveRedirected decides a redirected connection for the instance that
// owns its client address: by SNI or Host when it carries one, else as a
// raw stream to the address it was going to. A client no instance owns is
// closed.
func (s *App) serveRedirected(ctx context.Context, conn net.Conn, src, dst netip.AddrPort) {
	inst, ok := s.registry.BySource(src.Addr())
	if !ok {
		s.log.Warn("transparent listener: no instance has this client address among its sources; connection closed",
			"client", src.String(), "destination", dst.String())
		return
	}
	s.proxy.ServeCaptured(ctx, conn, proxy.Capture{
		Instance: inst, Host: dst.Addr().String(), Port: int(dst.Port()), NameInPayload: true, Via: "transparent",
	})
}
