package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/decision"
)

// captureListener stands in for the jail's network stack: every connection
// accepted on a loopback listener is served as captured with c.
func (h *harness) captureListener(c Capture) string {
	h.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { ln.Close() })
	if c.Instance == nil {
		c.Instance = fakeInst{id: "a", class: "Test"}
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go h.srv.ServeCaptured(context.Background(), conn, c)
		}
	}()
	return ln.Addr().String()
}

// tcpUpstream accepts connections, counting them, and runs serve on each.
func tcpUpstream(t *testing.T, serve func(net.Conn)) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return ln.Addr().String(), &n
}

func dialCaptured(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCapturedPlainHTTP(t *testing.T) {
	up := echoUpstream(t)
	upAddr := strings.TrimPrefix(up.URL, "http://")
	h := newHarness(t, harnessOpts{connectTo: []string{"api.test:80:" + upAddr}})
	addr := h.captureListener(Capture{Host: "api.test", Port: 80, Via: "jail"})

	c := dialCaptured(t, addr)
	br := bufio.NewReader(c)
	for i := range 2 { // keep-alive: both requests are decided
		fmt.Fprintf(c, "GET /p%d?q=1 HTTP/1.1\r\nHost: api.test\r\n\r\n", i)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if body := mustBody(t, res); res.StatusCode != 200 || body != fmt.Sprintf("GET /p%d?q=1 ", i) {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
		if got := h.backend.last().url; got != fmt.Sprintf("http://api.test/p%d?q=1", i) {
			t.Fatalf("backend saw %q", got)
		}
	}

	// A Host other than the name the client resolved is misdirected.
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustBody(t, res)
	if res.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("other Host: %d, want 421", res.StatusCode)
	}
	c.Close()
	waitUntil(t, "the connection's log line", func() bool {
		return strings.Contains(h.logs.String(), `"step":"http"`) && strings.Contains(h.logs.String(), `"via":"jail"`)
	})
}

func TestCapturedTLSIntercepted(t *testing.T) {
	_, ho := httpsUpstream(t, echoHandler())
	h := newHarness(t, ho)
	addr := h.captureListener(Capture{Host: "example.com", Port: 443, Via: "jail"})

	pool := x509.NewCertPool()
	a, _ := h.cas.Get("a")
	pool.AppendCertsFromPEM(a.CertPEM())
	for _, proto := range []string{"h2", "http/1.1"} {
		tr := &http.Transport{
			DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return net.Dial("tcp", addr) },
			TLSClientConfig:   &tls.Config{RootCAs: pool, NextProtos: []string{proto}},
			ForceAttemptHTTP2: proto == "h2",
		}
		if proto != "h2" {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://example.com/x")
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		body := mustBody(t, res)
		if res.StatusCode != 200 || body != "GET /x " {
			t.Fatalf("%s: %d %q", proto, res.StatusCode, body)
		}
		if got := h.backend.last(); got.url != "https://example.com/x" || got.proto != map[string]string{"h2": "HTTP/2.0", "http/1.1": "HTTP/1.1"}[proto] {
			t.Fatalf("%s: backend saw %q over %s", proto, got.url, got.proto)
		}
		tr.CloseIdleConnections()
	}
}

func TestCapturedTLSSNIMustMatchName(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var connects atomic.Int64
	h.backend.connect = func(Instance, string, int) decision.Connect {
		connects.Add(1)
		return decision.Connect{Allow: true, Step: "internet"}
	}
	addr := h.captureListener(Capture{Host: "api.test", Port: 443})
	c := tls.Client(dialCaptured(t, addr), &tls.Config{ServerName: "evil.test", InsecureSkipVerify: true})
	if err := c.Handshake(); err == nil {
		t.Fatal("handshake with another SNI succeeded")
	}
	waitUntil(t, "the refusal's log line", func() bool { return strings.Contains(h.logs.String(), `"step":"misdirected"`) })
	if n := connects.Load(); n != 0 {
		t.Fatalf("a mismatched SNI was decided %d times", n)
	}
}

func TestCapturedTLSTunnelled(t *testing.T) {
	_, ho := httpsUpstream(t, echoHandler())
	h := newHarness(t, ho)
	h.backend.connect = func(_ Instance, host string, port int) decision.Connect {
		return decision.Connect{Allow: true, Step: "allowed_fallback"}
	}
	addr := h.captureListener(Capture{Host: "example.com", Port: 443})
	c := tls.Client(dialCaptured(t, addr), &tls.Config{ServerName: "example.com", RootCAs: ho.roots, NextProtos: []string{"http/1.1"}})
	fmt.Fprint(c, "GET /t HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := mustBody(t, res); body != "GET /t " {
		t.Fatalf("body %q", body)
	}
	if n := h.backend.count(); n != 0 {
		t.Fatalf("a tunnelled connection reached Handle %d times", n)
	}
}

func TestCapturedRaw(t *testing.T) {
	echo, accepts := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	banner, _ := tcpUpstream(t, func(c net.Conn) { io.WriteString(c, "SSH-2.0-test\r\n"); io.Copy(io.Discard, c) })
	h := newHarness(t, harnessOpts{connectTo: []string{"raw.test:7000:" + echo, "ssh.test:22:" + banner, "web.test:443:" + echo}})
	var rawHosts atomic.Value
	h.backend.raw = func(_ Instance, host string) decision.Connect {
		rawHosts.Store(host)
		if host == "denied.test" {
			return decision.Connect{Step: "denied"}
		}
		return decision.Connect{Allow: true, Step: "internet"}
	}

	t.Run("client speaks first", func(t *testing.T) {
		c := dialCaptured(t, h.captureListener(Capture{Host: "raw.test", Port: 7000}))
		fmt.Fprint(c, "\x00\x01hello\n")
		got := make([]byte, 8)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "\x00\x01hello\n" {
			t.Fatalf("echo %q, %v", got, err)
		}
		c.(*net.TCPConn).CloseWrite()
		if rest, _ := io.ReadAll(c); len(rest) != 0 {
			t.Fatalf("after half-close: %q", rest)
		}
	})
	t.Run("server speaks first", func(t *testing.T) {
		c := dialCaptured(t, h.captureListener(Capture{Host: "ssh.test", Port: 22}))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "SSH-2.0-test\r\n" {
			t.Fatalf("banner %q, %v", line, err)
		}
	})
	t.Run("neither TLS nor HTTP on 443 is raw", func(t *testing.T) {
		c := dialCaptured(t, h.captureListener(Capture{Host: "web.test", Port: 443}))
		fmt.Fprint(c, "\x05\x01\x00")
		got := make([]byte, 3)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if rawHosts.Load() != "web.test" {
			t.Fatalf("Raw decided %v", rawHosts.Load())
		}
	})
	t.Run("refused is never dialled", func(t *testing.T) {
		before := accepts.Load()
		h.up.CloseIdleConnections()
		c := dialCaptured(t, h.captureListener(Capture{Host: "denied.test", Port: 7000}))
		fmt.Fprint(c, "hello\n")
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("read %d bytes from a refused stream", n)
		}
		if accepts.Load() != before {
			t.Fatal("a refused stream was dialled")
		}
	})
}

// TestCapturedNameInPayload: the transparent listener knows only the
// address the client dialled; SNI and Host name the target, and that name,
// not the address, is decided and dialled.
func TestCapturedNameInPayload(t *testing.T) {
	up := echoUpstream(t)
	_, ho := httpsUpstream(t, echoHandler())
	ho.connectTo = append(ho.connectTo, "api.test:80:"+strings.TrimPrefix(up.URL, "http://"))
	h := newHarness(t, ho)
	// 192.0.2.1 (TEST-NET-1) is never dialled: the names are.
	httpAddr := h.captureListener(Capture{Host: "192.0.2.1", Port: 80, NameInPayload: true, Via: "transparent"})
	c := dialCaptured(t, httpAddr)
	fmt.Fprint(c, "GET /h HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := mustBody(t, res); res.StatusCode != 200 || body != "GET /h " || h.backend.last().url != "http://api.test/h" {
		t.Fatalf("%d %q, backend saw %q", res.StatusCode, body, h.backend.last().url)
	}

	tlsAddr := h.captureListener(Capture{Host: "192.0.2.1", Port: 443, NameInPayload: true, Via: "transparent"})
	pool := x509.NewCertPool()
	a, _ := h.cas.Get("a")
	pool.AppendCertsFromPEM(a.CertPEM())
	tc := tls.Client(dialCaptured(t, tlsAddr), &tls.Config{ServerName: "example.com", RootCAs: pool, NextProtos: []string{"http/1.1"}})
	fmt.Fprint(tc, "GET /s HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	res, err = http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := mustBody(t, res); res.StatusCode != 200 || body != "GET /s " || h.backend.last().url != "https://example.com/s" {
		t.Fatalf("%d %q, backend saw %q", res.StatusCode, body, h.backend.last().url)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
