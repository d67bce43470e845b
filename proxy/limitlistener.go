package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// limitListener caps the client connections open at once. One over the cap
// is answered with a 503 and closed at once rather than left waiting
// (netutil.LimitListener's way): a waiting connection sits unanswered in
// the accept queue until the client times out, which looks like a hang and
// hides the overload, while the 503 says what happened.
type limitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused func() // counts a refusal, for logs and metrics
}

// tooManyConns is written to a connection refused by the cap. The request
// has not been read; Connection: close tells the client not to reuse it.
const tooManyConns = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Connection: close\r\nContent-Length: 46\r\n\r\ntoo many open connections to the proxy; retry\n"

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &limitConn{Conn: c, l: l}, nil
		}
		l.open.Add(-1)
		if l.refused != nil {
			l.refused()
		}
		// A few dozen bytes fit the socket buffer: this does not block the
		// accept loop, and the deadline bounds it if it somehow does.
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, tooManyConns)
		c.Close()
	}
}

// limitConn gives its slot back once, on the first Close. It passes
// CloseWrite, ReadFrom and WriteTo through, so half-closing relays and
// splice/sendfile copies work as on the bare TCP connection.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported // the caller then closes both ways
}

func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *limitConn) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.Conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{c.Conn})
}
