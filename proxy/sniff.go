package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// payload is what a captured connection carries, judged by its first bytes.
type payload int

const (
	payloadRaw  payload = iota // anything else: a raw TCP stream
	payloadTLS                 // a TLS handshake record
	payloadHTTP                // an HTTP/1.x request line
	payloadNone                // the client sent nothing in time
)

// maxRequestLine bounds how much of a first line is read to tell HTTP from
// other text protocols.
const maxRequestLine = 8 << 10

// sniff reads (without consuming) the first bytes of br until it can tell
// TLS from HTTP/1.x from anything else. A read error before any byte
// (the deadline, EOF) is payloadNone; one in the middle of a first line
// leaves what was read to decide, which without a complete HTTP request
// line is payloadRaw. br must buffer at least maxRequestLine bytes.
func sniff(br *bufio.Reader) payload {
	b, err := br.Peek(1)
	if err != nil || len(b) == 0 {
		return payloadNone
	}
	if b[0] == 0x16 { // TLS handshake record
		return payloadTLS
	}
	for {
		b, _ = br.Peek(br.Buffered())
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			if isRequestLine(b[:i+1]) {
				return payloadHTTP
			}
			return payloadRaw
		}
		if len(b) >= maxRequestLine || !mayBeRequestLine(b) {
			return payloadRaw
		}
		if _, err := br.Peek(len(b) + 1); err != nil { // wait for more
			return payloadRaw
		}
	}
}

// mayBeRequestLine reports whether b can still begin an HTTP request line.
func mayBeRequestLine(b []byte) bool {
	method, _, _ := bytes.Cut(b, []byte(" "))
	if !isToken(method) {
		return false
	}
	for _, c := range b {
		if c < 0x20 && c != '\r' || c == 0x7f {
			return false
		}
	}
	return true
}

// isRequestLine reports whether line (ending in "\n") is an HTTP/1.x
// request line: METHOD SP TARGET SP HTTP/1.x CRLF.
func isRequestLine(line []byte) bool {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(method) == 0 || !isToken(method) {
		return false
	}
	target, proto, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(target) == 0 || bytes.ContainsAny(target, " \t\r") {
		return false
	}
	return bytes.Equal(proto, []byte("HTTP/1.1")) || bytes.Equal(proto, []byte("HTTP/1.0"))
}

// isToken reports whether b is made of the characters of HTTP methods in
// use (upper-case letters, '-' and '_').
func isToken(b []byte) bool {
	for _, c := range b {
		if (c < 'A' || c > 'Z') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// errHelloSeen stops the handshake once the ClientHello is parsed.
var errHelloSeen = errors.New("client hello read")

// peekClientHello parses the TLS ClientHello at the front of br and returns
// it with every byte it consumed, to be replayed in front of the rest. The
// parse is crypto/tls's own, so whatever Go accepts as a ClientHello is
// judged the same way here and at interception.
func peekClientHello(br *bufio.Reader) (*tls.ClientHelloInfo, []byte, error) {
	rec := &recordingConn{r: br}
	var hello *tls.ClientHelloInfo
	err := tls.Server(rec, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = h
			return nil, errHelloSeen
		},
	}).Handshake()
	if hello == nil {
		if err == nil {
			err = errors.New("no ClientHello")
		}
		return nil, rec.buf.Bytes(), err
	}
	return hello, rec.buf.Bytes(), nil
}

// recordingConn feeds crypto/tls the client's bytes, keeps a copy of them,
// and swallows what tls writes back (the alert that ends the peek).
type recordingConn struct {
	r   io.Reader
	buf bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.buf.Write(p[:n])
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *recordingConn) Close() error                     { return nil }
func (c *recordingConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *recordingConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }

// peekRequestHost reads the head of the first HTTP request at the front of
// br (without consuming it) and returns its Host. br must buffer at least
// maxHeader bytes.
func peekRequestHost(br *bufio.Reader, maxHeader int) (string, error) {
	for n := 1; ; {
		if _, err := br.Peek(n); err != nil {
			return "", fmt.Errorf("reading the first request: %w", err)
		}
		b, _ := br.Peek(br.Buffered())
		if i := bytes.Index(b, []byte("\n\r\n")); i >= 0 || bytes.Contains(b, []byte("\n\n")) {
			req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				return "", fmt.Errorf("parsing the first request: %w", err)
			}
			return req.Host, nil
		}
		if len(b) >= maxHeader {
			return "", errors.New("first request header too large")
		}
		n = len(b) + 1
	}
}
