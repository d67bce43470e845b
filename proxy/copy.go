package proxy

// Moving bodies: copy buffers, flushing copies, and counting the request
// body the Backend reads.

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

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

// copyBody copies body to w. With stream set (a body of unknown length, an
// event stream) it flushes after every write, so the sandbox gets every
// byte as soon as upstream sends it. Otherwise (length bytes declared) it
// flushes only when upstream paused mid-body, a short read with more to
// come: a small response goes out in one write when the handler returns,
// and a body that trickles still arrives as it comes. A read failure is
// errUpstreamBody; a write failure (the sandbox went away) is returned as
// is.
func copyBody(w io.Writer, f http.Flusher, body io.Reader, length int64, stream bool) (int64, error) {
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
			if f != nil && (stream || (nr < len(buf) && n < length)) {
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
