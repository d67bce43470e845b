package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/outbound-dev/outbound/internal/host"
	"github.com/outbound-dev/outbound/proxy/har"
	"github.com/outbound-dev/outbound/proxy/upstream"
)

// serveConnect authenticates a CONNECT, asks the Backend, and then refuses
// it, intercepts it, or opens a raw tunnel.
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	a := &audit{start: time.Now(), id: s.newRequestID(), method: http.MethodConnect}
	handedOff := false // once a tunnel owns the audit record, it logs it
	defer func() {
		if !handedOff {
			s.logAudit(r.Context(), a)
		}
	}()

	inst := s.authenticate(w, r, a)
	if inst == nil {
		return
	}
	a.instance = inst
	h, port, ok := s.target(w, a, r.Host, "", "bad CONNECT target: want host:port")
	if !ok {
		return
	}
	stripRequest(r.Header)

	epoch := s.policyEpoch.Load()
	dec := s.opts.Backend.Connect(r.Context(), inst, h, port)
	a.step, a.blocked = dec.Step, !dec.Allow
	if !dec.Allow {
		s.refuseConnect(w, r, inst, dec.Block, a)
		return
	}
	// The slot is taken here and released by the tunnel (or by the path
	// that fails to open it, before it answers).
	if !s.acquireSlot() {
		a.step, a.status = stepTunnelLimit, http.StatusServiceUnavailable
		plain(w, a.status, "too many open tunnels; retry later")
		return
	}
	handedOff = true
	if dec.Intercept {
		s.intercept(w, r, inst, h, port, a)
	} else {
		s.rawTunnel(w, r, inst, h, port, a, epoch)
	}
}

// connectRecord starts the HAR entry of a CONNECT that is not intercepted.
func (s *Server) connectRecord(r *http.Request, inst Instance, a *audit) *har.Record {
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: net.JoinHostPort(a.host, strconv.Itoa(a.port))},
		Proto:  r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		Header: r.Header, Host: r.Host,
	}
	return s.opts.HAR.Begin(inst, a.id, req)
}

func (s *Server) refuseConnect(w http.ResponseWriter, r *http.Request, inst Instance, block *http.Response, a *audit) {
	rec := s.connectRecord(r, inst, a)
	if block == nil {
		block = decision.Blocked(nil)
	}
	a.status = block.StatusCode
	if err := s.writeResponse(w, r, block, false, a, rec, 0, nil); err != nil {
		a.err = errors.Join(a.err, err)
	}
}

// leafer issues interception leaf certificates: an instance's CA.
type leafer interface {
	Leaf(string) (*tls.Certificate, error)
}

// authority is the instance's interception CA, or nil.
func (s *Server) authority(inst Instance) leafer {
	if s.opts.CAs != nil {
		if ca, ok := s.opts.CAs.Get(inst.ID()); ok {
			return ca
		}
	}
	return nil
}

// intercept answers 200, terminates TLS with a leaf from the instance's CA
// for the CONNECT host, and hands the connection to the inner server.
func (s *Server) intercept(w http.ResponseWriter, r *http.Request, inst Instance, h string, port int, a *audit) {
	authority := s.authority(inst)
	t := &relay{inst: inst, host: h, port: port, mode: modeIntercept, a: a}
	if authority == nil {
		s.releaseSlot()
		a.status = http.StatusBadGateway
		a.err = errors.New("no interception CA for the instance")
		plain(w, a.status, "bad gateway")
		s.logAudit(r.Context(), a)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.releaseSlot()
		a.status = http.StatusInternalServerError
		a.err = fmt.Errorf("hijack CONNECT: %w", err)
		plain(w, a.status, "internal error")
		s.logAudit(r.Context(), a)
		return
	}
	t.conn = conn
	s.opts.Metrics.tunnel(modeIntercept, 1)
	s.track(t)
	a.status = http.StatusOK
	_ = conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		a.err = fmt.Errorf("write CONNECT response: %w", err)
		t.finish()
		return
	}
	s.terminate(t, replay(conn, nil, brw.Reader), authority) // bytes sent right behind the CONNECT
}

// terminate completes the sandbox's TLS handshake on conn with a leaf for
// t.host and hands the connection to the inner server. A present SNI must
// name t.host. It finishes t when the connection cannot be served.
func (s *Server) terminate(t *relay, conn net.Conn, authority leafer) {
	h, a := t.host, t.a
	tlsConn := tls.Server(&countConn{Conn: conn, t: t}, &tls.Config{
		MinVersion:       tls.VersionTLS12,
		NextProtos:       []string{"h2", "http/1.1"},
		CurvePreferences: s.interceptCurves(),
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			// An absent SNI (clients send none for IP literals) means the
			// CONNECT host; a present one must name it.
			if hello.ServerName != "" {
				sni, err := host.Normalize(hello.ServerName)
				if err != nil || sni != h {
					return nil, fmt.Errorf("SNI %q does not match CONNECT host %q", hello.ServerName, h)
				}
			}
			return authority.Leaf(h)
		},
	})
	ctx, cancel := context.WithTimeout(s.baseCtx, s.opts.TLSHandshakeTimeout)
	err := tlsConn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		a.err = fmt.Errorf("interception TLS handshake: %w", err)
		tlsConn.Close()
		t.finish()
		return
	}
	s.serveInner(t, tlsConn)
}

// serveInner hands a connection whose requests t owns to the inner server.
func (s *Server) serveInner(t *relay, c net.Conn) {
	s.mitm.Store(c, t)
	if err := s.innerLn.push(c); err != nil {
		s.mitm.Delete(c)
		t.a.err = fmt.Errorf("serve intercepted connection: %w", err)
		c.Close()
		t.finish()
	}
}

// interceptCurves are the key exchanges offered to the sandbox. By default
// classical only (X25519, P-256): the sandbox-to-proxy hop is usually
// loopback or a host-local network, where recording traffic to break it
// with a future quantum computer is not the threat, and ML-KEM encapsulation
// is a large share of a full handshake. The hybrids must be left out, not
// ordered last: Go ignores the order and always prefers them. A client that
// offers only a hybrid then fails to connect; InterceptPostQuantum restores
// Go's defaults (nil).
func (s *Server) interceptCurves() []tls.CurveID {
	if s.opts.InterceptPostQuantum {
		return nil
	}
	return []tls.CurveID{tls.X25519, tls.CurveP256}
}

// rawTunnel dials host:port through the guarded dialer and relays bytes.
// epoch is the policy epoch the tunnel was decided at (see Redecide).
func (s *Server) rawTunnel(w http.ResponseWriter, r *http.Request, inst Instance, h string, port int, a *audit, epoch uint64) {
	decide := func(ctx context.Context) decision.Connect { return s.opts.Backend.Connect(ctx, inst, h, port) }
	if dec, again := s.decideAgain(r.Context(), decide, &epoch); again {
		a.step = dec.Step
		switch {
		case !dec.Allow:
			s.releaseSlot()
			s.refuseConnect(w, r, inst, dec.Block, a)
			s.logAudit(r.Context(), a)
			return
		case dec.Intercept:
			s.intercept(w, r, inst, h, port, a)
			return
		}
	}
	rec := s.connectRecord(r, inst, a)
	fail := func(status int, msg string, err error) {
		s.releaseSlot()
		a.status, a.err = status, errors.Join(a.err, err)
		plain(w, status, msg)
		rec.Finish(&http.Response{StatusCode: status, Proto: r.Proto, Header: http.Header{}}, 0, time.Since(a.start))
		s.logAudit(r.Context(), a)
	}
	if s.opts.Dial == nil {
		fail(http.StatusBadGateway, "bad gateway", errors.New("no dialer for raw tunnels"))
		return
	}
	up, err := s.opts.Dial(r.Context(), "tcp", net.JoinHostPort(h, strconv.Itoa(port)))
	if err != nil {
		status, msg := decision.FailureStatus(r.Context(), err), "bad gateway"
		if status == http.StatusGatewayTimeout {
			msg = "gateway timeout"
		}
		fail(status, msg, fmt.Errorf("raw tunnel (%s): %w", upstream.Classify(err), err))
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		fail(http.StatusInternalServerError, "internal error", fmt.Errorf("hijack CONNECT: %w", err))
		return
	}
	t := &relay{inst: inst, host: h, port: port, mode: modeRaw, conn: conn, up: up, a: a, decide: decide, epoch: epoch}
	s.opts.Metrics.tunnel(modeRaw, 1)
	s.track(t)
	defer t.finish()
	defer up.Close()
	s.opened(s.baseCtx, t)
	a.status = http.StatusOK
	_ = conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		a.err = fmt.Errorf("write CONNECT response: %w", err)
		return
	}
	start := time.Now()
	a.bytesIn, a.bytesOut = pipe(conn, brw.Reader, up)
	rec.Finish(&http.Response{StatusCode: http.StatusOK, Proto: r.Proto, Header: http.Header{}}, a.bytesOut, time.Since(start))
}

// replay puts the bytes already read from conn (seen, then what br still
// buffers) back in front of it.
func replay(conn net.Conn, seen []byte, br *bufio.Reader) net.Conn {
	buffered, _ := br.Peek(br.Buffered())
	if len(seen)+len(buffered) == 0 {
		return conn
	}
	pre := make([]byte, 0, len(seen)+len(buffered))
	pre = append(append(pre, seen...), buffered...)
	return &prefixConn{Conn: conn, pre: pre}
}

type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite half-closes the connection underneath, so a relay can pass on
// the client's end of stream.
func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// countConn counts an intercepted tunnel's bytes on the wire.
type countConn struct {
	net.Conn
	t *relay
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.t.bytesIn.Add(int64(n))
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.t.bytesOut.Add(int64(n))
	return n, err
}
