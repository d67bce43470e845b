package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mhar "github.com/google/martian/v3/har"
	"github.com/outbound-dev/outbound/internal/decision"
)

// httpsUpstream is a TLS server whose certificate is valid for example.com;
// the harness's upstream transport dials it for example.com:443.
func httpsUpstream(t *testing.T, handler http.Handler) (*httptest.Server, harnessOpts) {
	t.Helper()
	srv := httptest.NewUnstartedServer(handler)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return srv, harnessOpts{
		roots:     roots,
		connectTo: []string{"example.com:443:127.0.0.1:" + portOf(srv.Listener.Addr().String())},
	}
}

func TestHTTPSIntercepted(t *testing.T) {
	_, ho := httpsUpstream(t, echoHandler())
	h := newHarness(t, ho)
	const secret = "Bearer injected-secret-xyz"
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		if RequestID(ctx) == "" {
			t.Error("no request id in the context")
		}
		req.Header.Set("Authorization", secret) // what a handler injects upstream
		return forward(h.backend.rt, req, "by_host")
	}

	// HTTP/1.1 inside the tunnel.
	c1 := h.client("a", tokenA, "a")
	c1.Transport.(*http.Transport).ForceAttemptHTTP2 = false
	c1.Transport.(*http.Transport).TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	res, err := c1.Post("https://EXAMPLE.com/path?x=1", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatalf("HTTPS with the instance CA: %v", err)
	}
	if body := mustBody(t, res); res.StatusCode != 200 || body != "POST /path?x=1 hi" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	if res.Proto != "HTTP/1.1" {
		t.Errorf("sandbox proto %s, want HTTP/1.1", res.Proto)
	}
	seen := h.backend.last()
	if seen.url != "https://example.com/path?x=1" || seen.inst != "a" || seen.proto != "HTTP/1.1" {
		t.Errorf("backend saw %+v", seen)
	}

	// HTTP/2 inside the tunnel, negotiated by ALPN.
	c2 := h.client("a", tokenA, "a")
	res, err = c2.Get("https://example.com/h2")
	if err != nil {
		t.Fatal(err)
	}
	mustBody(t, res)
	if res.Proto != "HTTP/2.0" || h.backend.last().proto != "HTTP/2.0" {
		t.Errorf("sandbox %s, backend %s: want HTTP/2.0 inside the MITM", res.Proto, h.backend.last().proto)
	}
	if res.Header.Get("X-Seen-Host") != "example.com" {
		t.Errorf("upstream Host %q", res.Header.Get("X-Seen-Host"))
	}

	// Another instance's CA does not validate this instance's interception.
	_, err = h.client("a", tokenA, "b").Get("https://example.com/")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("trusting B's CA for A's tunnel: %v, want unknown authority", err)
	}

	// The HAR holds what the sandbox sent, never the injected secret.
	b, err := h.har.HAR("a")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "injected-secret") || strings.Contains(string(b), tokenA) {
		t.Fatal("HAR holds a secret")
	}
	var doc mhar.HAR
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, e := range doc.Log.Entries {
		urls = append(urls, e.Request.URL)
	}
	if !strings.Contains(strings.Join(urls, " "), "https://example.com/path?x=1") {
		t.Errorf("HAR entries %v", urls)
	}
	if got := value(h.srv.opts.Metrics.leafCache.WithLabelValues("hit")) + value(h.srv.opts.Metrics.leafCache.WithLabelValues("miss")); got < 3 {
		t.Errorf("leaf cache lookups = %v", got)
	}
}

// tlsThroughConnect opens a tunnel and runs a TLS handshake with cfg.
func (h *harness) tlsThroughConnect(target string, cfg *tls.Config) (*tls.Conn, error) {
	h.t.Helper()
	c, br, res := h.connect(target, basic("a", tokenA))
	if res.StatusCode != 200 {
		h.t.Fatalf("CONNECT %s: %d", target, res.StatusCode)
	}
	tc := tls.Client(&bufConn{Conn: c, r: br}, cfg)
	return tc, tc.Handshake()
}

// The interception leg offers classical key exchange unless the operator
// asks for the post-quantum hybrid; a client that offers only P-256 or only
// the hybrid still gets a handshake it can complete.
func TestInterceptKeyExchange(t *testing.T) {
	for _, tc := range []struct {
		name        string
		postQuantum bool
		client      []tls.CurveID // nil: Go's defaults (hybrid and X25519 shares)
		want        tls.CurveID
		fail        bool
	}{
		{"default, Go client", false, nil, tls.X25519, false},
		{"default, P-256 only client", false, []tls.CurveID{tls.CurveP256}, tls.CurveP256, false},
		{"default, hybrid only client", false, []tls.CurveID{tls.X25519MLKEM768}, 0, true},
		{"post-quantum, Go client", true, nil, tls.X25519MLKEM768, false},
		{"post-quantum, X25519 only client", true, []tls.CurveID{tls.X25519}, tls.X25519, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{postQuantum: tc.postQuantum})
			a, _ := h.cas.Get("a")
			pool := x509.NewCertPool()
			pool.AddCert(a.Certificate())
			conn, err := h.tlsThroughConnect("example.com:443", &tls.Config{
				ServerName: "example.com", RootCAs: pool, CurvePreferences: tc.client, MinVersion: tls.VersionTLS13,
			})
			if tc.fail {
				if err == nil {
					conn.Close()
					t.Fatal("handshake succeeded with no common key exchange")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := conn.ConnectionState().CurveID; got != tc.want {
				t.Errorf("key exchange %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSNIAndHostMustMatchConnect(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		return textResponse(200, req.URL.String()), decision.Outcome{Step: "by_host"}
	}
	a, _ := h.cas.Get("a")
	pool := x509.NewCertPool()
	pool.AddCert(a.Certificate())

	// SNI names another host: the handshake fails.
	if _, err := h.tlsThroughConnect("example.com:443", &tls.Config{ServerName: "evil.com", RootCAs: pool}); err == nil {
		t.Fatal("handshake with SNI evil.com for CONNECT example.com succeeded")
	}
	waitFor(t, func() bool {
		return strings.Contains(h.logs.String(), `SNI \"evil.com\" does not match CONNECT host \"example.com\"`)
	})
	// SNI differing only in case and trailing dot is the same host.
	tc, err := h.tlsThroughConnect("example.com:443", &tls.Config{ServerName: "Example.COM.", RootCAs: pool, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("normalised SNI: %v", err)
	}
	tc.Close()
	// No SNI (an IP-literal CONNECT): the CONNECT host's leaf, with an IP SAN.
	tc, err = h.tlsThroughConnect("10.1.2.3:443", &tls.Config{ServerName: "10.1.2.3", RootCAs: pool})
	if err != nil {
		t.Fatalf("IP literal without SNI: %v", err)
	}
	if ips := tc.ConnectionState().PeerCertificates[0].IPAddresses; len(ips) != 1 || ips[0].String() != "10.1.2.3" {
		t.Errorf("leaf IP SANs %v", ips)
	}
	tc.Close()

	// Inner Host differs from the CONNECT host: 421, the backend never asked.
	before := h.backend.count()
	tc, err = h.tlsThroughConnect("example.com:443", &tls.Config{ServerName: "example.com", RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tbr := bufio.NewReader(tc)
	for _, hostHeader := range []string{"other.com", "example.com:8443"} {
		fmt.Fprintf(tc, "GET /x HTTP/1.1\r\nHost: %s\r\n\r\n", hostHeader)
		res, err := http.ReadResponse(tbr, nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("Host %s inside CONNECT example.com: %d, want 421", hostHeader, res.StatusCode)
		}
	}
	if h.backend.count() != before {
		t.Error("a misdirected request reached the backend")
	}
	// The matching Host (any spelling, explicit :443) is served.
	fmt.Fprint(tc, "GET /ok HTTP/1.1\r\nHost: EXAMPLE.com.:443\r\n\r\n")
	res, err := http.ReadResponse(tbr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := mustBody(t, res); res.StatusCode != 200 || body != "https://example.com/ok" {
		t.Errorf("%d %q", res.StatusCode, body)
	}
}

func TestRawTunnel(t *testing.T) {
	h := newHarness(t, harnessOpts{maxTunnels: 2})
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	target := echo.Addr().String()
	h.backend.connect = func(inst Instance, host string, port int) decision.Connect {
		if host == "denied.example" {
			return decision.Connect{Step: "denied"} // default block
		}
		if host == "custom.example" {
			return decision.Connect{Step: "not_allowed", Block: textResponse(403, `{"error":"nope"}`)}
		}
		return decision.Connect{Allow: true, Step: "internet"}
	}

	// Allowed: bytes go both ways, client-side pipelined bytes included.
	c, br := h.raw()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\nearly-", target, target, basic("a", tokenA))
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", res, err)
	}
	io.WriteString(c, "ping")
	got := make([]byte, len("early-ping"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "early-ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	waitFor(t, func() bool { return h.srv.ActiveTunnels() == 1 })
	if g := value(h.srv.opts.Metrics.tunnels.WithLabelValues("raw")); g != 1 {
		t.Errorf("active raw tunnels gauge %v", g)
	}

	// Denied, default block: 520 Origin is disallowed.
	_, _, res = h.connect("denied.example:22", basic("a", tokenA))
	if body := mustBody(t, res); res.StatusCode != 520 || body != "Origin is disallowed" {
		t.Errorf("denied CONNECT: %d %q", res.StatusCode, body)
	}
	// Denied with the script's block response.
	_, _, res = h.connect("custom.example:25", basic("a", tokenA))
	if body := mustBody(t, res); res.StatusCode != 403 || body != `{"error":"nope"}` {
		t.Errorf("custom block: %d %q", res.StatusCode, body)
	}

	// Tunnel cap: one open, one more allowed, the third gets 503.
	c2, _, res2 := h.connect(target, basic("a", tokenA))
	if res2.StatusCode != 200 {
		t.Fatalf("second tunnel: %d", res2.StatusCode)
	}
	_, _, res3 := h.connect(target, basic("a", tokenA))
	if res3.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("over the cap: %d, want 503", res3.StatusCode)
	}
	c2.Close()
	c.Close()
	waitFor(t, func() bool { return h.srv.ActiveTunnels() == 0 })
	if g := value(h.srv.opts.Metrics.tunnels.WithLabelValues("raw")); g != 0 {
		t.Errorf("active raw tunnels gauge %v after close", g)
	}
	if !strings.Contains(h.logs.String(), `"method":"CONNECT"`) || !strings.Contains(h.logs.String(), `"bytes_out":10`) {
		t.Errorf("tunnel audit line missing or without byte counts:\n%s", h.logs.String())
	}
}

func TestCloseInstanceAndShutdownCloseTunnels(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Close() })
	go func() {
		for {
			c, err := hold.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	c, br, res := h.connect(hold.Addr().String(), basic("a", tokenA))
	if res.StatusCode != 200 {
		t.Fatal(res.Status)
	}
	h.srv.CloseInstance("b")
	time.Sleep(50 * time.Millisecond)
	if h.srv.ActiveTunnels() != 1 {
		t.Fatal("CloseInstance closed another instance's tunnel")
	}
	h.srv.CloseInstance("a")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("tunnel still open after CloseInstance")
	}
	waitFor(t, func() bool { return h.srv.ActiveTunnels() == 0 })

	// Shutdown closes a tunnel still open once its grace period is over
	// (here: none), and says so.
	c, br, _ = h.connect(hold.Addr().String(), basic("a", tokenA))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "closed 1 ") {
		t.Fatalf("Shutdown with no grace and a tunnel open: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("tunnel still open after Shutdown")
	}
}

// waitFor polls cond; the deadline only bounds a broken run, so it is
// generous for a busy machine.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
