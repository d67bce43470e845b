package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writeCounter counts the writes on the connections a listener accepts.
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, n: &l.writes}, nil
}

type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// A small response with a length goes to the sandbox in one write: head
// and body together, no flush of its own per chunk.
func TestSmallResponseIsOneWrite(t *testing.T) {
	wc := &writeCounter{}
	h := newHarness(t, harnessOpts{wrapListener: func(ln net.Listener) net.Listener { wc.Listener = ln; return wc }})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "6")
		io.WriteString(w, "small\n")
	}))
	t.Cleanup(up.Close)
	c, br := h.raw()
	for i := range 3 {
		before := wc.writes.Load()
		fmt.Fprintf(c, "GET %s/%d HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n", up.URL, i, basic("a", tokenA))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "small\n" {
			t.Fatalf("body %q", b)
		}
		if n := wc.writes.Load() - before; n != 1 {
			t.Errorf("request %d: %d writes to the sandbox, want 1", i, n)
		}
	}
}

// Bodies that need it reach the sandbox as they come, not when the
// upstream finishes: an event stream, a chunked body of unknown length, and
// a body with a length whose upstream pauses halfway.
func TestStreamsAreFlushedAsTheyCome(t *testing.T) {
	for _, tc := range []struct {
		name, ctype string
		length      bool
	}{
		{"event stream", "text/event-stream", false},
		{"chunked", "text/plain", false},
		{"length, upstream pauses", "application/octet-stream", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			release := make(chan struct{})
			first, second := "data: one\n\n", "data: two\n\n"
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				if tc.length {
					w.Header().Set("Content-Length", fmt.Sprint(len(first)+len(second)))
				}
				io.WriteString(w, first)
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, second)
			}))
			t.Cleanup(up.Close)
			t.Cleanup(func() {
				select {
				case <-release:
				default:
					close(release)
				}
			})
			res, err := h.client("a", tokenA, "a").Get(up.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			got := make(chan string, 1)
			go func() {
				buf := make([]byte, 64)
				n, _ := io.ReadAtLeast(res.Body, buf, len(first))
				got <- string(buf[:n])
			}()
			select {
			case s := <-got:
				if s != first {
					t.Fatalf("first part %q", s)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the first part did not arrive before upstream went on: the proxy holds it back")
			}
			close(release)
			rest, _ := io.ReadAll(res.Body)
			if string(rest) != second {
				t.Fatalf("rest %q", strings.TrimSpace(string(rest)))
			}
		})
	}
}

// The same inside an intercepted tunnel: one TLS record per small response
// over HTTP/1.1. Over HTTP/2, net/http's frame writer sends the HEADERS and
// the DATA frame (which ends the stream) in a record each; flushing per
// write added a third, an empty DATA frame to end the stream.
func TestSmallInterceptedResponseIsOneWrite(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			_, ho := httpsUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "6")
				io.WriteString(w, "small\n")
			}))
			wc := &writeCounter{}
			ho.wrapListener = func(ln net.Listener) net.Listener { wc.Listener = ln; return wc }
			h := newHarness(t, ho)
			c := h.client("a", tokenA, "a")
			c.Transport.(*http.Transport).ForceAttemptHTTP2 = h2
			get := func() {
				res, err := c.Get("https://example.com/")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if string(b) != "small\n" || (res.ProtoMajor == 2) != h2 {
					t.Fatalf("body %q over %s", b, res.Proto)
				}
			}
			get() // the tunnel and its handshake
			want := int64(1)
			if h2 {
				want = 2
			}
			for i := range 3 {
				before := wc.writes.Load()
				get()
				if n := wc.writes.Load() - before; n > want {
					t.Errorf("request %d: %d writes to the sandbox, want %d", i, n, want)
				}
			}
		})
	}
}
