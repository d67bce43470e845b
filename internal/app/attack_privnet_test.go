package app_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// canary is an HTTP server on 127.0.0.1 that no sandbox may reach.
func canary(t *testing.T) (port int, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("canary reached"))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port, hits
}

// Private network reach: every spelling of loopback, plain and over a raw
// CONNECT, is refused at dial time, and the canary never sees a request.
func TestPrivateNetworkReach(t *testing.T) {
	port, hits := canary(t)
	srv := apptest.Start(t, app.Config{Script: securityDir + "policy.js"})
	open := srv.Create(t, "open", "Open")
	c := apptest.Client(t, open)
	id, token := credsOf(t, open)
	p := strconv.Itoa(port)
	for _, h := range []string{
		"localhost", "LOCALHOST.", "127.0.0.1", "127.1", "0x7f000001", "2130706433", "0177.0.0.1",
		"0x7f.0.0.1", "127.000.000.001", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
		"[64:ff9b::7f00:1]", "[2002:7f00:1::]", "0.0.0.0", "0",
	} {
		t.Run(h, func(t *testing.T) {
			code, body := call(t, c, "GET", "http://"+h+":"+p+"/", nil)
			if code == 200 || strings.Contains(body, "canary") {
				t.Errorf("GET %s:%s reached loopback: %d %q", h, p, code, body)
			}
			if code, _ := connectRaw(t, srv.ProxyAddr().String(), h+":"+p, basicAuth(id, token)); code == 200 {
				t.Errorf("CONNECT %s:%s opened a tunnel", h, p)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback canary saw %d requests", n)
	}
}

// A cloud metadata address is refused by the guard before any packet: the
// log names the guard's refusal, not a dial failure.
func TestMetadataRefusedBeforeDial(t *testing.T) {
	srv := apptest.Start(t, app.Config{Script: securityDir + "policy.js"})
	c := apptest.Client(t, srv.Create(t, "open", "Open"))
	for _, u := range []string{"http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/"} {
		code, body := call(t, c, "GET", u, nil)
		if code != 502 {
			t.Errorf("GET %s: %d %q, want 502", u, code, body)
		}
	}
	// The audit line is written after the answer: give it a moment.
	for _, want := range []string{"169.254.169.254:80 refused", "[fd00:ec2::254]:80 refused"} {
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(srv.Log.String(), want) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !strings.Contains(srv.Log.String(), want) {
			t.Errorf("the log does not show the guard refusing %q", want)
		}
	}
}

// The proxy's own listeners are refused even when private addresses are
// allowed, so a sandbox cannot loop through the proxy or reach the admin API.
func TestSelfLoopRefused(t *testing.T) {
	srv := apptest.Start(t, app.Config{Script: securityDir + "policy.js", AllowPrivate: true})
	open := srv.Create(t, "open", "Open")
	c := apptest.Client(t, open)
	id, token := credsOf(t, open)
	for _, addr := range []net.Addr{srv.ProxyAddr(), srv.AdminAddr()} {
		port := strconv.Itoa(addr.(*net.TCPAddr).Port)
		for _, h := range []string{"127.0.0.1", "localhost", "127.1", "[::ffff:127.0.0.1]", "0.0.0.0"} {
			code, body := call(t, c, "GET", "http://"+h+":"+port+"/v1/status", nil)
			if code == 200 || strings.Contains(body, "generation") {
				t.Errorf("GET %s:%s reached the proxy itself: %d %q", h, port, code, body)
			}
			// Refused by the proxy before the policy runs (400), not only
			// by the dial guard behind it (502).
			if code != 400 {
				t.Errorf("GET %s:%s: %d %q, want the proxy's own 400", h, port, code, body)
			}
			if code, _ := connectRaw(t, srv.ProxyAddr().String(), h+":"+port, basicAuth(id, token)); code != 400 {
				t.Errorf("CONNECT %s:%s: %d, want the proxy's own 400", h, port, code)
			}
		}
	}
}

// A redirect from an allowed upstream to a private address is refused at
// the second hop of fetch in a handler.
func TestRedirectToPrivateRefused(t *testing.T) {
	port, hits := canary(t)
	up, upHits := countingUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:"+strconv.Itoa(port)+"/", http.StatusFound)
	}))
	srv := apptest.Start(t, app.Config{
		Script:    securityDir + "policy.js",
		ConnectTo: []string{"allowed.test:80:" + upstreamIP + ":" + portOf(up)},
	})
	c := apptest.Client(t, srv.Create(t, "fetcher", "Fetcher"))
	code, body := call(t, c, "GET", "http://allowed.test/", nil)
	if code == 200 || strings.Contains(body, "canary") {
		t.Errorf("the redirect reached loopback: %d %q", code, body)
	}
	if upHits.Load() != 1 {
		t.Errorf("the allowed upstream saw %d requests, want 1", upHits.Load())
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback canary saw %d requests", n)
	}
}

// Port pivot: with the internet off, an allowed host is reachable on 80 and
// 443 only; a CONNECT to 25 or 22 is refused before any dial.
func TestPortPivotRefused(t *testing.T) {
	var accepts atomic.Int64
	ln, err := net.Listen("tcp", upstreamIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	lport := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	srv := apptest.Start(t, app.Config{
		Script:    securityDir + "policy.js",
		ConnectTo: []string{"allowed.test:25:" + upstreamIP + ":" + lport, "allowed.test:22:" + upstreamIP + ":" + lport},
	})
	for _, class := range []string{"Raw", "Allow"} {
		id, token := credsOf(t, srv.Create(t, strings.ToLower(class), class))
		for _, target := range []string{"allowed.test:25", "allowed.test:22"} {
			if code, _ := connectRaw(t, srv.ProxyAddr().String(), target, basicAuth(id, token)); code != 520 {
				t.Errorf("%s: CONNECT %s: %d, want 520", class, target, code)
			}
		}
	}
	if n := accepts.Load(); n != 0 {
		t.Errorf("the SMTP/SSH stand-in accepted %d connections", n)
	}
}
