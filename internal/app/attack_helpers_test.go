package app_test

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/proxy/control"
)

// Helpers of the attack corpus (attack_*_test.go): every test talks to a
// real server over loopback sockets.

const securityDir = "../../testdata/security/"

// upstreamIP is where test upstreams listen. It is not 127.0.0.1, so that
// opting it in with ConnectTo leaves the rest of loopback guarded.
const upstreamIP = "127.0.0.2"

// countingUpstream is a plain HTTP upstream on upstreamIP that counts hits.
func countingUpstream(t *testing.T, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream "+r.Host) })
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	ln, err := net.Listen("tcp", upstreamIP+":0")
	if err != nil {
		t.Fatalf("listening on %s: %v", upstreamIP, err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &hits
}

// portOf is the port of an httptest server.
func portOf(s *httptest.Server) string {
	return s.Listener.Addr().(*net.TCPAddr).AddrPort().String()[len(upstreamIP)+1:]
}

// call sends one request through c and returns status and body.
func call(t *testing.T, c *http.Client, method, u string, hdr http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// credsOf splits an instance's proxy URL into id and token.
func credsOf(t *testing.T, c control.Created) (id, token string) {
	t.Helper()
	u, err := url.Parse(c.ProxyURL)
	if err != nil {
		t.Fatal(err)
	}
	token, _ = u.User.Password()
	return u.User.Username(), token
}

func basicAuth(id, token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+token))
}

// rawExchange writes payload to addr and returns what came back until the
// peer closed the connection (closed true) or the deadline passed.
func rawExchange(t *testing.T, addr, payload string, wait time.Duration) (reply string, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, payload); err != nil {
		return "", true
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return string(b), false
	}
	return string(b), true
}

// statusOf is the status code of the first response in a raw reply, or 0.
func statusOf(reply string) int {
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(reply)), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// connectRaw opens a CONNECT through the proxy with the given headers and
// returns the status line's code and the connection (open on 200).
func connectRaw(t *testing.T, proxyAddr, target, auth string) (int, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if auth != "" {
		req += "Proxy-Authorization: " + auth + "\r\n"
	}
	io.WriteString(conn, req+"\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	conn.SetReadDeadline(time.Time{})
	return resp.StatusCode, conn
}

// waitGoroutines waits until the goroutine count is back near base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	const slack = 10
	deadline := time.Now().Add(10 * time.Second)
	n := runtime.NumGoroutine()
	for n > base+slack && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	if n > base+slack {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutines: %d, baseline %d\n%s", n, base, buf)
	}
}
