package app_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// fromIP returns a client whose connections come from local (a loopback
// address), proxied through proxyURL if set.
func fromIP(t *testing.T, local, proxyURL string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	if proxyURL != "" {
		u, err := url.Parse(proxyURL)
		if err != nil {
			t.Fatal(err)
		}
		tr.Proxy = http.ProxyURL(u)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func do(t *testing.T, c *http.Client, req *http.Request) (int, http.Header) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header
}

// Guessing credentials is rate-limited per source address: after the burst
// of failures, that source gets 429 without its credentials being checked
// (even right ones), other sources are unaffected, and the log says so
// once, without any token.
func TestBruteForceRateLimited(t *testing.T) {
	up, _ := countingUpstream(t, nil)
	const adminToken = "admin-token-7f3a9c"
	srv := apptest.Start(t, app.Config{
		Script:        securityDir + "policy.js",
		ConnectTo:     []string{"ok.test:80:" + upstreamIP + ":" + portOf(up)},
		AdminToken:    adminToken,
		AuthFailBurst: 5,
		AuthFailRate:  0.01, // no refill within the test
	})
	victim := srv.Create(t, "victim", "Open")
	id, tok := credsOf(t, victim)
	proxyAddr := srv.ProxyAddr().String()
	const attacker, bystander = "127.0.0.3", "127.0.0.4"
	guessURL := "http://" + id + ":wrong-guess-0001@" + proxyAddr
	guesser := fromIP(t, attacker, guessURL)
	get := func(c *http.Client) (int, http.Header) {
		req, _ := http.NewRequest("GET", "http://ok.test/", nil)
		return do(t, c, req)
	}

	// No credentials at all is a challenge, not a guess: it costs nothing.
	for i := 0; i < 10; i++ {
		if code, _ := get(fromIP(t, attacker, "http://"+proxyAddr)); code != 407 {
			t.Fatalf("no credentials: %d, want 407", code)
		}
	}
	for i := 0; i < 5; i++ {
		if code, _ := get(guesser); code != 407 {
			t.Fatalf("guess %d: %d, want 407", i, code)
		}
	}
	code, hdr := get(guesser)
	if code != 429 || hdr.Get("Retry-After") == "" {
		t.Errorf("guess past the burst: %d, Retry-After %q; want 429 with Retry-After", code, hdr.Get("Retry-After"))
	}
	// Right credentials from the limited source are not even checked.
	if code, _ := get(fromIP(t, attacker, victim.ProxyURL)); code != 429 {
		t.Errorf("right credentials from the limited source: %d, want 429", code)
	}
	if code := connectFrom(t, attacker, proxyAddr, "ok.test:443", basicAuth(id, "wrong")); code != 429 {
		t.Errorf("CONNECT from the limited source: %d, want 429", code)
	}
	// Another source is unaffected.
	if code, _ := get(fromIP(t, bystander, victim.ProxyURL)); code != 200 {
		t.Errorf("another source with right credentials: %d, want 200", code)
	}

	// The control API token, the same way.
	admin := fromIP(t, attacker, "")
	list := func(token string) int {
		req, _ := http.NewRequest("GET", "http://"+srv.AdminAddr().String()+"/v1/instances", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		code, _ := do(t, admin, req)
		return code
	}
	for i := 0; i < 5; i++ {
		if code := list("wrong-admin-guess"); code != 401 {
			t.Fatalf("admin guess %d: %d, want 401", i, code)
		}
	}
	if code := list("wrong-admin-guess"); code != 429 {
		t.Errorf("admin guess past the burst: %d, want 429", code)
	}
	if code := list(adminToken); code != 429 {
		t.Errorf("right admin token from the limited source: %d, want 429", code)
	}
	if _, err := srv.Admin.List(context.Background()); err != nil {
		t.Errorf("control API from another source: %v", err)
	}

	logs := srv.Log.String()
	if n := strings.Count(logs, "too many failed authentications"); n != 2 {
		t.Errorf("%d rate-limit log lines, want one for the proxy and one for the admin token:\n%s", n, logs)
	}
	for _, secret := range []string{tok, "wrong-guess-0001", adminToken, "wrong-admin-guess"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds a token or guess %q", secret)
		}
	}
}

// connectFrom sends a CONNECT from local and returns the status code.
func connectFrom(t *testing.T, local, proxyAddr, target, auth string) int {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: "+auth+"\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
