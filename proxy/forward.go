package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outbound-dev/outbound/internal/host"
	"github.com/outbound-dev/outbound/proxy/har"
)

// serveProxy is the outer listener's handler: CONNECT, or an absolute-form
// plain HTTP request.
func (s *Server) serveProxy(w http.ResponseWriter, r *http.Request) {
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
	t, _ := r.Context().Value(tunnelKey{}).(*tunnel)
	if t == nil { // every inner connection is registered before it is served
		plain(w, http.StatusInternalServerError, "internal error")
		return
	}
	a := &audit{start: time.Now(), id: s.newRequestID(), instance: t.inst, method: r.Method, scheme: "https",
		host: t.host, port: t.port, path: r.URL.Path}
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
	if t.port != 443 {
		hostport = net.JoinHostPort(t.host, strconv.Itoa(t.port))
	}
	s.handle(w, r, t.inst, &url.URL{Scheme: "https", Host: hostport, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}, a, t)
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
	} else if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		ips = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Loopback(), netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	}
	for _, ip := range ips {
		if s.guard.IsSelf(netip.AddrPortFrom(ip, uint16(port))) {
			return true
		}
	}
	return false
}

// handle hands one request to the Backend and writes its response. in is
// the enclosing intercepted tunnel, if any.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, inst Instance, u *url.URL, a *audit, in *tunnel) {
	if u.Path == "" {
		u.Path = "/"
	}
	websocket := stripRequest(r.Header)
	ctx := context.WithValue(r.Context(), requestIDKey{}, a.id)
	out := r.WithContext(ctx)
	out.URL = u
	out.Host = u.Host
	out.RequestURI = ""
	out.Close = false
	var body *countingReader
	if r.ContentLength == 0 {
		out.Body = http.NoBody
	} else {
		body = &countingReader{r: r.Body, size: r.ContentLength}
		out.Body = body
	}

	// Recorded before the Backend sees it: nothing a handler adds upstream
	// enters the trace.
	rec := s.opts.HAR.Begin(inst.ID(), a.id, out)
	start := time.Now()
	res, oc := s.opts.Backend.Handle(ctx, inst, out)
	wait := time.Since(start)
	s.opts.Metrics.handler(oc.Handler, wait)
	a.step, a.handler, a.err = oc.Step, oc.Handler, oc.Err

	if res == nil {
		if a.step == "" {
			a.step = stepNoBackend
		}
		a.status = http.StatusBadGateway
		a.err = errors.Join(a.err, errors.New("backend returned no response"))
		plain(w, a.status, "bad gateway")
		rec.Finish(&http.Response{StatusCode: a.status, Header: http.Header{}}, 0, wait)
		return
	}
	a.status = res.StatusCode
	err := s.writeResponse(w, r, res, websocket, a, rec, wait, in)
	if body != nil {
		a.in = body.n.Load()
	}
	if errors.Is(err, errUpstreamBody) {
		// Headers are out; cut the connection (or stream) so the sandbox
		// sees a truncated response rather than a complete short one.
		a.err = errors.Join(a.err, err)
		panic(http.ErrAbortHandler)
	}
}

var errUpstreamBody = errors.New("reading the upstream response body failed")

// writeResponse streams res to the sandbox: hop-by-hop headers stripped,
// every chunk flushed as soon as it arrives. A 101 answering a WebSocket
// request switches to relaying the connection.
func (s *Server) writeResponse(w http.ResponseWriter, r *http.Request, res *http.Response, websocket bool, a *audit, rec *har.Record, wait time.Duration, in *tunnel) error {
	if res.Body == nil {
		res.Body = http.NoBody
	}
	if res.Header == nil {
		res.Header = http.Header{}
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		if websocket {
			return s.relayUpgrade(w, r, res, a, rec, wait, in)
		}
		res.Body.Close()
		a.status = http.StatusBadGateway
		a.err = errors.Join(a.err, errors.New("101 Switching Protocols for a request that asked for no upgrade"))
		plain(w, a.status, "bad gateway")
		rec.Finish(&http.Response{StatusCode: a.status, Header: http.Header{}}, 0, wait)
		return nil
	}
	defer res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 999 {
		a.status = http.StatusBadGateway
		a.err = errors.Join(a.err, fmt.Errorf("unusable response status %d", res.StatusCode))
		plain(w, a.status, "bad gateway")
		return nil
	}

	stripHop(res.Header)
	dst := w.Header()
	for k, vv := range res.Header {
		dst[k] = vv
	}
	if len(res.Trailer) > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	if res.ContentLength >= 0 && dst.Get("Content-Length") == "" && bodyAllowed(res.StatusCode) {
		dst.Set("Content-Length", strconv.FormatInt(res.ContentLength, 10))
	}
	w.WriteHeader(res.StatusCode)
	asSent := *res
	asSent.Proto = r.Proto
	flusher, _ := w.(http.Flusher) // the HTTP/1 and HTTP/2 writers both flush
	// A stream of unknown length (SSE, chunked) gets its headers now: the
	// first event may be a long way off.
	if flusher != nil && (res.ContentLength < 0 || isEventStream(dst)) {
		flusher.Flush()
	}
	n, err := copyFlushing(w, flusher, res.Body)
	a.out = n
	for k, vv := range res.Trailer {
		if _, announced := dst[k]; !announced {
			k = http.TrailerPrefix + k
		}
		dst[k] = vv
	}
	rec.Finish(&asSent, n, wait)
	return err
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	// Most answers are not event streams: skip the parse (it allocates)
	// unless the subtype can be there at all.
	if len(ct) < len("text/event-stream") || !containsFold(ct, "event-stream") {
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// containsFold reports whether s contains the lower-case ASCII sub, ignoring
// ASCII case in s.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for j < len(sub) {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
			j++
		}
		if j == len(sub) {
			return true
		}
	}
	return false
}

// Copy buffers come in two sizes. Every response starts with a small one;
// once a single read fills it, the body is a bulk transfer and moves to a
// large one, which halves the syscalls per byte on both sockets (measured:
// BenchmarkProxyDownload). Small answers never hold a large buffer, so
// thousands of concurrent requests cost 32 KiB each, not 128.
const (
	smallCopyBuf = 32 << 10
	largeCopyBuf = 128 << 10
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallCopyBuf); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}
)

// copyFlushing copies body to w, flushing after each write so the sandbox
// gets every byte as soon as upstream sends it. A read failure is
// errUpstreamBody; a write failure (the sandbox went away) is returned as is.
func copyFlushing(w io.Writer, f http.Flusher, body io.Reader) (int64, error) {
	bp, pool := smallBufs.Get().(*[]byte), &smallBufs
	defer func() { pool.Put(bp) }()
	buf := *bp
	var n int64
	for {
		nr, rerr := body.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if f != nil {
				f.Flush()
			}
			if nr == len(buf) && pool == &smallBufs {
				smallBufs.Put(bp)
				bp, pool = largeBufs.Get().(*[]byte), &largeBufs
				buf = *bp
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("%w: %w", errUpstreamBody, rerr)
		}
	}
}

// countingReader counts the request body bytes the Backend reads. Once the
// body has ended (EOF seen, or the declared length delivered) it answers
// io.EOF itself: the net/http server closes a fully read request body when
// the response header is written, and if the upstream transport's final
// read for EOF then failed, the transport would drop the upstream
// connection with the response still streaming.
type countingReader struct {
	r    io.ReadCloser
	n    atomic.Int64
	size int64 // the declared Content-Length, or -1
	eof  bool  // Read is not called concurrently
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.eof || (c.size > 0 && c.n.Load() >= c.size) {
		return 0, io.EOF
	}
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if err == io.EOF {
		c.eof = true
	}
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// relayUpgrade answers a WebSocket handshake the Backend accepted (101 with
// the upgraded connection as its body) and relays both ways.
func (s *Server) relayUpgrade(w http.ResponseWriter, r *http.Request, res *http.Response, a *audit, rec *har.Record, wait time.Duration, in *tunnel) error {
	back, ok := res.Body.(io.ReadWriteCloser)
	upgrade, _ := stripHop(res.Header)
	fail := func(err error) error {
		res.Body.Close()
		a.status = http.StatusBadGateway
		a.err = errors.Join(a.err, err)
		plain(w, a.status, "bad gateway")
		rec.Finish(&http.Response{StatusCode: a.status, Header: http.Header{}}, 0, wait)
		return nil
	}
	if !ok {
		return fail(fmt.Errorf("101 response body %T is not a connection", res.Body))
	}
	if upgrade != "websocket" {
		return fail(fmt.Errorf("101 response switches to %q, not websocket", upgrade))
	}
	res.Header.Set("Connection", "Upgrade")
	res.Header.Set("Upgrade", "websocket")

	s.hijackWG.Add(1)
	defer s.hijackWG.Done()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil { // HTTP/2 has no upgrade
		return fail(fmt.Errorf("hijack for websocket: %w", err))
	}
	defer back.Close()
	defer conn.Close()
	if in != nil {
		defer in.finish() // the intercepted tunnel ends with this relay
	} else {
		t := &tunnel{inst: a.instance, conn: conn}
		s.track(t)
		defer t.finish()
	}
	_ = conn.SetDeadline(time.Time{})
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	res.Header.Write(brw)
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		a.err = errors.Join(a.err, fmt.Errorf("write websocket handshake: %w", err))
		return nil
	}
	asSent := *res
	asSent.Proto = r.Proto
	rec.Finish(&asSent, 0, wait)
	a.in, a.out = relay(conn, brw.Reader, back)
	return nil
}

// relay copies src→dst both ways until both directions end. When one
// direction ends, the other side's write half is closed where the
// connection supports it (TCP, TLS), else both are closed.
func relay(client net.Conn, clientR io.Reader, up io.ReadWriteCloser) (in, out int64) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		in, _ = io.Copy(up, clientR)
		if !closeWrite(up) {
			up.Close()
			client.Close()
		}
	}()
	out, _ = io.Copy(client, up)
	if !closeWrite(client) {
		up.Close()
		client.Close()
	}
	<-done
	return in, out
}

func closeWrite(c any) bool {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite() == nil
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
