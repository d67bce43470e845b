package proxy

// Entry points: the outer listener's handler, the intercepted requests'
// handler, and the one check of where a request is going.

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/outbound-dev/outbound/internal/host"
)

// serveProxy is the outer listener's handler: CONNECT, or an absolute-form
// plain HTTP request.
func (s *Server) serveProxy(w http.ResponseWriter, r *http.Request) {
	s.active.add()
	defer s.active.done()
	if r.Method == http.MethodConnect {
		s.serveConnect(w, r)
		return
	}
	a := &audit{start: time.Now(), id: s.newRequestID(), method: r.Method, scheme: r.URL.Scheme, path: r.URL.Path}
	defer s.logAudit(r.Context(), a)

	// Go's server keeps the URL host of an absolute-form request as r.Host
	// and drops the Host header, as RFC 9112 3.2.2 requires of a proxy: the
	// URL host is the only host the Backend and the upstream ever see.
	if !r.URL.IsAbs() || r.URL.Host == "" {
		a.step, a.status = stepBadRequest, http.StatusBadRequest
		plain(w, a.status, "not a proxy request: use an absolute http:// URL, or CONNECT")
		return
	}
	if r.URL.Scheme != "http" {
		a.step, a.status = stepBadRequest, http.StatusBadRequest
		plain(w, a.status, "only http:// URLs are proxied; use CONNECT for https")
		return
	}
	inst := s.authenticate(w, r, a)
	if inst == nil {
		return
	}
	a.instance = inst
	h, port, ok := s.target(w, a, r.URL.Host, "80", "bad request target host")
	if !ok {
		return
	}
	hostport := bracket(h)
	if r.URL.Port() != "" { // as sent: keep an explicit port, even :80
		hostport = net.JoinHostPort(h, strconv.Itoa(port))
	}
	s.handle(w, r, inst, &url.URL{Scheme: "http", Host: hostport, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}, a, nil)
}

// serveIntercepted is the inner server's handler: one request inside an
// intercepted tunnel. Its identity and host are the CONNECT's.
func (s *Server) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	s.active.add()
	defer s.active.done()
	t, _ := r.Context().Value(relayKey{}).(*relay)
	if t == nil { // every inner connection is registered before it is served
		plain(w, http.StatusInternalServerError, "internal error")
		return
	}
	scheme, defaultPort := "https", 443
	if t.mode == modeCapturedHTTP {
		scheme, defaultPort = "http", 80
	}
	a := &audit{start: time.Now(), id: s.newRequestID(), instance: t.inst, method: r.Method, scheme: scheme,
		host: t.host, port: t.port, path: r.URL.Path}
	if t.a != nil {
		a.via = t.a.via
	}
	defer s.logAudit(r.Context(), a)

	if r.Method == http.MethodConnect {
		a.step, a.status = stepBadRequest, http.StatusBadRequest
		plain(w, a.status, "CONNECT inside an intercepted tunnel is not supported")
		return
	}
	authority := r.Host
	if authority == "" { // HTTP/1.0 without Host
		authority = t.host
	}
	h, port, err := host.SplitHostPort(authority, strconv.Itoa(t.port))
	if err != nil || h != t.host || port != t.port {
		a.step, a.status = stepMisdirected, http.StatusMisdirectedRequest
		plain(w, a.status, "misdirected request: Host does not match the CONNECT target")
		return
	}
	hostport := bracket(t.host)
	if t.port != defaultPort {
		hostport = net.JoinHostPort(t.host, strconv.Itoa(t.port))
	}
	s.handle(w, r, t.inst, &url.URL{Scheme: scheme, Host: hostport, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}, a, t)
}

func bracket(h string) string {
	if strings.IndexByte(h, ':') >= 0 {
		return "[" + h + "]"
	}
	return h
}

// isSelf reports whether host:port names one of the proxy's own addresses.
// Names are left to the dial guard, except localhost.
func (s *Server) isSelf(h string, port int) bool {
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(h); err == nil {
		ips = []netip.Addr{ip}
	} else if host.IsLocalhost(h) {
		ips = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Loopback(), netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	}
	for _, ip := range ips {
		if s.guard.IsSelf(netip.AddrPortFrom(ip, uint16(port))) {
			return true
		}
	}
	return false
}

// target normalises a request's destination and refuses a malformed one or
// one addressed to the proxy itself; it answers the sandbox when it refuses.
func (s *Server) target(w http.ResponseWriter, a *audit, hostport, defaultPort, badMsg string) (string, int, bool) {
	h, port, err := host.SplitHostPort(hostport, defaultPort)
	if err != nil {
		a.step, a.status = stepBadRequest, http.StatusBadRequest
		plain(w, a.status, badMsg)
		return "", 0, false
	}
	a.host, a.port = h, port
	if s.isSelf(h, port) {
		a.step, a.status = stepSelf, http.StatusBadRequest
		plain(w, a.status, "request addressed to the proxy itself")
		return "", 0, false
	}
	return h, port, true
}
