package app_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// Slow and abusive clients: each limit is configured small so the test is
// fast, and each is shown to leave other clients served.

// Slowloris: a client that sends part of its headers and stalls is cut off
// after ReadHeaderTimeout, on the proxy and on the admin listener, while
// other clients are served meanwhile.
func TestSlowlorisCutOff(t *testing.T) {
	up, _ := countingUpstream(t, nil)
	const timeout = 300 * time.Millisecond
	srv := apptest.Start(t, app.Config{
		Script:            securityDir + "policy.js",
		ConnectTo:         []string{"ok.test:80:" + upstreamIP + ":" + portOf(up)},
		ReadHeaderTimeout: timeout,
	})
	good := apptest.Client(t, srv.Create(t, "good", "Open"))
	ctx := context.Background()

	var wg sync.WaitGroup
	for name, addr := range map[string]string{"proxy": srv.ProxyAddr().String(), "admin": srv.AdminAddr().String()} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			start := time.Now()
			io.WriteString(conn, "GET http://ok.test/ HTTP/1.1\r\nHost: ok.test\r\nX-Slow: ")
			conn.SetReadDeadline(start.Add(timeout + 2*time.Second))
			_, err = io.ReadAll(conn)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("%s: a stalled header block was still open after %v", name, time.Since(start))
			}
		}()
	}
	// Both stalls are in progress: others are served meanwhile.
	if code, body := call(t, good, "GET", "http://ok.test/", nil); code != 200 {
		t.Errorf("proxy during slowloris: %d %q", code, body)
	}
	if _, err := srv.Admin.List(ctx); err != nil {
		t.Errorf("control API during slowloris: %v", err)
	}
	wg.Wait()
}

// The proxy listener caps open client connections, idle ones included: one
// over the cap gets a 503 and is closed, and a slot freed is usable again.
func TestConnectionCap(t *testing.T) {
	up, _ := countingUpstream(t, nil)
	const maxConns = 4
	srv := apptest.Start(t, app.Config{
		Script:    securityDir + "policy.js",
		ConnectTo: []string{"ok.test:80:" + upstreamIP + ":" + portOf(up)},
		MaxConns:  maxConns,
	})
	c := srv.Create(t, "open", "Open")
	addr := srv.ProxyAddr().String()
	idle := make([]net.Conn, maxConns)
	for i := range idle {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		idle[i] = conn
	}
	reply, closed := rawExchange(t, addr, "", time.Second)
	if statusOf(reply) != 503 || !closed {
		t.Errorf("connection over the cap: %q (closed %v), want a 503 and close", reply, closed)
	}
	idle[0].Close()
	client := apptest.Client(t, c)
	deadline := time.Now().Add(3 * time.Second)
	for {
		code, body := call(t, client, "GET", "http://ok.test/", nil)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a connection closed: %d %q, want 200", code, body)
		}
		client.CloseIdleConnections()
		time.Sleep(20 * time.Millisecond)
	}
}

// Concurrent CONNECT tunnels are capped: one more gets a clear 503, and a
// tunnel closed frees its slot.
func TestTunnelCap(t *testing.T) {
	up, _ := countingUpstream(t, nil)
	srv := apptest.Start(t, app.Config{
		Script:     securityDir + "policy.js",
		ConnectTo:  []string{"allowed.test:443:" + upstreamIP + ":" + portOf(up)},
		MaxTunnels: 2,
	})
	id, tok := credsOf(t, srv.Create(t, "raw", "Raw"))
	addr, auth := srv.ProxyAddr().String(), basicAuth(id, tok)
	_, first := connectRaw(t, addr, "allowed.test:443", auth)
	if code, _ := connectRaw(t, addr, "allowed.test:443", auth); code != 200 {
		t.Fatalf("second tunnel: %d, want 200", code)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\nProxy-Authorization: "+auth+"\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != 503 || !strings.Contains(string(body), "too many open tunnels") {
		t.Errorf("tunnel over the cap: %d %q, want 503 saying so", resp.StatusCode, body)
	}
	first.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		code, _ := connectRaw(t, addr, "allowed.test:443", auth)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a tunnel closed: %d, want 200", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A handler reading a body over the JS cap fails that request with a 500
// that carries none of the body, and the proxy keeps serving.
func TestJSBodyCap(t *testing.T) {
	up, _ := countingUpstream(t, nil)
	srv := apptest.Start(t, app.Config{
		Script:       securityDir + "limits.js",
		ConnectTo:    []string{"ok.test:80:" + upstreamIP + ":" + portOf(up)},
		MaxBodyBytes: 1 << 10,
	})
	c := apptest.Client(t, srv.Create(t, "reader", ""))
	post := func(body string) (int, string) {
		resp, err := c.Post("http://ok.test/", "text/plain", strings.NewReader(body))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const marker = "BODY-MARKER-"
	code, body := post(strings.Repeat(marker, 4<<10/len(marker)))
	if code != 500 || strings.Contains(body, marker) {
		t.Errorf("body over the cap: %d %q, want 500 without the body", code, body)
	}
	if code, body := post("small"); code != 200 || body != "read 5" {
		t.Errorf("after the capped body: %d %q", code, body)
	}
}

// An upstream that never sends its headers gets a 504 after the upstream
// response header timeout.
func TestSlowUpstream(t *testing.T) {
	slow, _ := countingUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	srv := apptest.Start(t, app.Config{
		Script:                        securityDir + "policy.js",
		ConnectTo:                     []string{"slow.test:80:" + upstreamIP + ":" + portOf(slow)},
		UpstreamResponseHeaderTimeout: 300 * time.Millisecond,
	})
	c := apptest.Client(t, srv.Create(t, "open", "Open"))
	c.Timeout = 3 * time.Second
	if code, body := call(t, c, "GET", "http://slow.test/", nil); code != 504 {
		t.Errorf("slow upstream: %d %q, want 504", code, body)
	}
}
