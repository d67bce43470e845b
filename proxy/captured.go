package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/outbound-dev/outbound/internal/host"
	"github.com/outbound-dev/outbound/proxy/upstream"
)

// DefaultSniffTimeout is how long a captured connection to a port other
// than 80 or 443 may stay silent before it is taken for a protocol in which
// the server speaks first (SSH, SMTP) and decided as a raw stream.
const DefaultSniffTimeout = 500 * time.Millisecond

// Tunnel modes of captured connections, for metrics and the log; captured
// TLS uses modeIntercept or modeRaw like a CONNECT.
const modeCapturedHTTP = "http"

// stepShutdown: a connection captured while the server shuts down.
const stepShutdown = "shutdown"

// Capture describes a connection taken without the client's cooperation:
// by the jail's network stack or the transparent listener.
type Capture struct {
	Instance Instance
	// Host is the normalised name the client resolved (the jail maps its
	// private address back to it) or the IP literal it dialled.
	Host string
	Port int
	// NameInPayload says Host is only the address the client dialled (the
	// transparent listener): a TLS SNI or an HTTP Host then names the
	// target, and that name is decided and dialled. Otherwise SNI and Host
	// must agree with Host.
	NameInPayload bool
	// Via names the capture in the log ("jail", "transparent").
	Via string
}

// ServeCaptured serves one captured connection until it ends, deciding it
// exactly as a proxied one for the same instance: a TLS ClientHello as a
// CONNECT to its name and port (then intercepted or tunnelled), plain HTTP
// request by request by its Host, and any other stream as a raw tunnel
// (Backend.Raw). Nothing is dialled before the decision, and what is dialled
// is the name, never the address the client chose. A refused connection is
// closed; a refused HTTP request gets the block response. Shutdown drains
// it like a request; one arriving during Shutdown is refused.
func (s *Server) ServeCaptured(ctx context.Context, conn net.Conn, c Capture) {
	// Counted whole, sniffing and deciding included, so Shutdown drains it;
	// added before the shutting check, so Shutdown either waits or refuses.
	s.active.add()
	defer s.active.done()
	// The inner server owns an intercepted or plain-HTTP connection once it
	// is handed over; closing it is how the caller learns it has ended.
	nc := &notifyConn{Conn: conn, closed: make(chan struct{})}
	conn = nc
	defer func() { <-nc.closed }()
	// The forced cut also ends one still sniffing or deciding: Shutdown
	// waits for it.
	defer context.AfterFunc(s.baseCtx, func() { nc.Close() })()
	a := &audit{start: time.Now(), id: s.newRequestID(), instance: c.Instance, method: http.MethodConnect,
		scheme: "tcp", host: c.Host, port: c.Port, via: c.Via}
	handedOff := false // once a tunnel owns the audit record, it logs it
	defer func() {
		if !handedOff {
			conn.Close()
			s.logAudit(ctx, a)
		}
	}()
	if s.shutting.Load() {
		a.step, a.err = stepShutdown, errors.New("shutting down")
		return
	}
	if s.isSelf(c.Host, c.Port) {
		a.step, a.status = stepSelf, http.StatusBadRequest
		return
	}

	web := c.Port == 80 || c.Port == 443
	wait := s.opts.CaptureSniffTimeout
	if web { // a web client always speaks first: wait for it as for a request
		wait = s.opts.ReadHeaderTimeout
	}
	br := bufio.NewReaderSize(conn, max(s.opts.MaxHeaderBytes, maxRequestLine))
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	kind := sniff(br)
	if kind == payloadNone && web {
		a.step, a.status, a.err = stepBadRequest, http.StatusBadRequest, errors.New("the client sent nothing")
		return
	}

	name := c.Host
	var seen []byte // what reading the ClientHello took out of br
	switch kind {
	case payloadTLS:
		a.scheme = "tls"
		_ = conn.SetReadDeadline(time.Now().Add(s.opts.TLSHandshakeTimeout))
		hello, read, err := peekClientHello(br)
		if err != nil {
			a.step, a.status, a.err = stepHandshake, http.StatusBadRequest, fmt.Errorf("reading the ClientHello: %w", err)
			return
		}
		seen = read
		if hello.ServerName != "" {
			sni, err := host.Normalize(hello.ServerName)
			switch {
			case err != nil:
				a.step, a.status, a.err = stepBadRequest, http.StatusBadRequest, fmt.Errorf("bad SNI %q: %w", hello.ServerName, err)
				return
			case c.NameInPayload:
				name = sni
			case sni != c.Host:
				a.step, a.status = stepMisdirected, http.StatusMisdirectedRequest
				a.err = fmt.Errorf("SNI %q does not match the name the client resolved, %q", hello.ServerName, c.Host)
				return
			}
		}
	case payloadHTTP:
		if c.NameInPayload {
			_ = conn.SetReadDeadline(time.Now().Add(s.opts.ReadHeaderTimeout))
			authority, err := peekRequestHost(br, s.opts.MaxHeaderBytes)
			if err != nil {
				a.step, a.status, a.err = stepBadRequest, http.StatusBadRequest, err
				return
			}
			if authority != "" {
				h, _, err := host.SplitHostPort(authority, strconv.Itoa(c.Port))
				if err != nil {
					a.step, a.status, a.err = stepBadRequest, http.StatusBadRequest, fmt.Errorf("bad Host %q: %w", authority, err)
					return
				}
				name = h
			}
		}
	}
	conn = replay(conn, seen, br)
	_ = conn.SetReadDeadline(time.Time{})
	a.host = name
	if name != c.Host && s.isSelf(name, c.Port) {
		a.step, a.status = stepSelf, http.StatusBadRequest
		return
	}

	var dec decision.Connect
	var decide func(context.Context) decision.Connect // how an opaque tunnel is decided again
	epoch := s.policyEpoch.Load()
	switch kind {
	case payloadHTTP:
		// Each request is decided by the Backend as it arrives.
		dec = decision.Connect{Allow: true, Step: modeCapturedHTTP}
	case payloadTLS:
		decide = func(ctx context.Context) decision.Connect {
			return s.opts.Backend.Connect(ctx, c.Instance, name, c.Port)
		}
		dec = decide(ctx)
	default:
		decide = func(ctx context.Context) decision.Connect { return s.opts.Backend.Raw(ctx, c.Instance, name) }
		dec = decide(ctx)
	}
	a.step, a.blocked = dec.Step, !dec.Allow
	if !dec.Allow {
		a.status = decision.StatusBlocked // a nil Block means the default 520
		if dec.Block != nil {
			a.status = dec.Block.StatusCode
			if dec.Block.Body != nil {
				dec.Block.Body.Close()
			}
		}
		return
	}
	if !s.acquireSlot() {
		a.step, a.status = stepTunnelLimit, http.StatusServiceUnavailable
		return
	}
	handedOff = true
	a.status = http.StatusOK
	t := &relay{inst: c.Instance, host: name, port: c.Port, conn: conn, a: a}
	switch {
	case kind == payloadHTTP:
		t.mode = modeCapturedHTTP
		s.opts.Metrics.tunnel(t.mode, 1)
		s.track(t)
		s.serveInner(t, &countConn{Conn: conn, t: t})
	case dec.Intercept:
		t.mode = modeIntercept
		s.opts.Metrics.tunnel(t.mode, 1)
		s.track(t)
		authority := s.authority(c.Instance)
		if authority == nil {
			a.status, a.err = http.StatusBadGateway, errors.New("no interception CA for the instance")
			t.finish()
			return
		}
		s.terminate(t, conn, authority)
	default:
		t.mode, t.decide, t.epoch = modeRaw, decide, epoch
		s.captureRaw(ctx, t)
	}
}

// captureRaw dials t's name and port through the guarded dialer and relays
// bytes until both directions end.
func (s *Server) captureRaw(ctx context.Context, t *relay) {
	a := t.a
	target := net.JoinHostPort(t.host, strconv.Itoa(t.port))
	rec := s.opts.HAR.Begin(t.inst, a.id, &http.Request{
		Method: http.MethodConnect, URL: &url.URL{Opaque: target}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Host: target,
	})
	s.opts.Metrics.tunnel(modeRaw, 1)
	s.track(t)
	defer t.finish()
	if !s.opened(s.baseCtx, t) {
		return // cut before anything was dialled
	}
	if s.opts.Dial == nil {
		a.status, a.err = http.StatusBadGateway, errors.New("no dialer for raw tunnels")
		return
	}
	up, err := s.opts.Dial(ctx, "tcp", target)
	if err != nil {
		a.step, a.status, a.err = stepDial, decision.FailureStatus(ctx, err), fmt.Errorf("raw tunnel (%s): %w", upstream.Classify(err), err)
		rec.Finish(&http.Response{StatusCode: a.status, Proto: "HTTP/1.1", Header: http.Header{}}, 0, time.Since(a.start))
		return
	}
	defer up.Close()
	t.setUp(up) // closed at once if t was cut while dialling
	start := time.Now()
	a.bytesIn, a.bytesOut = pipe(t.conn, t.conn, up)
	rec.Finish(&http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", Header: http.Header{}}, a.bytesOut, time.Since(start))
}

// notifyConn closes its channel when the connection is closed.
type notifyConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (n *notifyConn) Close() error {
	err := n.Conn.Close()
	n.once.Do(func() { close(n.closed) })
	return err
}

func (n *notifyConn) CloseWrite() error {
	if cw, ok := n.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
