package app_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// smugglingServer runs policy.js with allowed.test and evil.test both
// pointing at local upstreams, so a request that reaches evil.test counts.
func smugglingServer(t *testing.T) (*apptest.Server, *atomic.Int64) {
	t.Helper()
	allowed, _ := countingUpstream(t, nil)
	evil, evilHits := countingUpstream(t, nil)
	var tlsEvilHits atomic.Int64
	up := apptest.NewTLSUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(strings.ToLower(r.Host), "evil") {
			tlsEvilHits.Add(1)
			evilHits.Add(1)
		}
		io.WriteString(w, "tls upstream "+r.Host)
	}), "allowed.test", "evil.test")
	srv := apptest.Start(t, app.Config{
		Script: securityDir + "policy.js",
		ConnectTo: []string{
			"allowed.test:80:" + upstreamIP + ":" + portOf(allowed),
			"evil.test:80:" + upstreamIP + ":" + portOf(evil),
			up.ConnectTo("allowed.test", 443), up.ConnectTo("evil.test", 443),
		},
		UpstreamCA: []string{up.CAFile},
	})
	return srv, evilHits
}

// Destination smuggling: every spelling that tries to reach evil.test past
// an allowlist or a denylist is refused, and evil.test never sees a request.
func TestDestinationSmuggling(t *testing.T) {
	srv, evilHits := smugglingServer(t)
	allow := srv.Create(t, "allow", "Allow")
	deny := srv.Create(t, "deny", "Deny")
	proxyAddr := srv.ProxyAddr().String()

	for _, tc := range []struct {
		name, inst, target, host string
	}{
		{"absolute URI host differs from Host", "allow", "http://evil.test/", "allowed.test"},
		{"userinfo", "allow", "http://allowed.test@evil.test/", "evil.test"},
		{"userinfo with port", "allow", "http://allowed.test:80@evil.test/", "evil.test"},
		{"backslash before at", "allow", `http://allowed.test\@evil.test/`, "allowed.test"},
		{"percent-encoded host", "allow", "http://%65vil.test/", "allowed.test"},
		{"percent-encoded dot", "allow", "http://evil%2Etest/", "allowed.test"},
		{"IDN homograph", "allow", "http://\u0430llowed.test/", "allowed.test"},
		{"allowed suffix glued on", "allow", "http://evil.test.allowed.test.evil.test/", "allowed.test"},
		{"uppercase dodges deny", "deny", "http://EVIL.TEST/", "EVIL.TEST"},
		{"trailing dot dodges deny", "deny", "http://evil.test./", "evil.test."},
		{"trailing dots dodge deny", "deny", "http://evil.test../", "evil.test.."},
		{"fullwidth dodges deny", "deny", "http://\uff45vil.test/", "evil.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			created := allow
			if tc.inst == "deny" {
				created = deny
			}
			id, token := credsOf(t, created)
			before := evilHits.Load()
			req := "GET " + tc.target + " HTTP/1.1\r\nHost: " + tc.host + "\r\nProxy-Authorization: " + basicAuth(id, token) + "\r\nConnection: close\r\n\r\n"
			reply, _ := rawExchange(t, proxyAddr, req, 5*time.Second)
			code := statusOf(reply)
			if evilHits.Load() != before {
				t.Fatalf("%s reached evil.test (status %d)", tc.target, code)
			}
			if code == 200 && !strings.Contains(reply, "upstream allowed.test") {
				t.Errorf("%s: 200 from somewhere else: %q", tc.target, reply)
			}
			if code == 0 {
				t.Errorf("%s: no HTTP answer: %q", tc.target, reply)
			}
		})
	}

	// HTTPS to a denied host in any spelling is refused: at the CONNECT, or
	// (intercepted) at the request inside the tunnel.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(deny.CAPEM))
	for _, hostName := range []string{"EVIL.TEST", "evil.test.", "Evil.Test.."} {
		id, token := credsOf(t, deny)
		code, conn := connectRaw(t, proxyAddr, hostName+":443", basicAuth(id, token))
		if code == 200 {
			tc := tls.Client(conn, &tls.Config{ServerName: "evil.test", RootCAs: pool, NextProtos: []string{"http/1.1"}})
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				continue // refused at the handshake: fine
			}
			io.WriteString(tc, "GET / HTTP/1.1\r\nHost: "+hostName+"\r\nConnection: close\r\n\r\n")
			b, _ := io.ReadAll(tc)
			code = statusOf(string(b))
		}
		if code != 520 {
			t.Errorf("HTTPS to %s: %d, want 520", hostName, code)
		}
	}
	if n := evilHits.Load(); n != 0 {
		t.Errorf("evil.test saw %d requests", n)
	}
}

// Domain fronting: the CONNECT target, the SNI and the inner Host must agree.
func TestConnectSNIHostMustAgree(t *testing.T) {
	srv, evilHits := smugglingServer(t)
	allow := srv.Create(t, "allow", "Allow")
	id, token := credsOf(t, allow)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(allow.CAPEM))

	// SNI names evil.test inside a tunnel to allowed.test.
	code, conn := connectRaw(t, srv.ProxyAddr().String(), "allowed.test:443", basicAuth(id, token))
	if code != 200 {
		t.Fatalf("CONNECT allowed.test: %d", code)
	}
	// The attacker does not care which certificate comes back: the
	// handshake itself must fail, whatever the inner Host says.
	tc := tls.Client(conn, &tls.Config{ServerName: "evil.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err == nil {
		t.Errorf("TLS handshake with SNI evil.test in a tunnel to allowed.test succeeded")
		io.WriteString(tc, "GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n")
		b, _ := io.ReadAll(tc)
		if c := statusOf(string(b)); c == 200 {
			t.Errorf("SNI evil.test in a tunnel to allowed.test answered 200: %q", b)
		}
	}

	// SNI agrees, the inner Host does not.
	code, conn = connectRaw(t, srv.ProxyAddr().String(), "allowed.test:443", basicAuth(id, token))
	if code != 200 {
		t.Fatalf("CONNECT allowed.test: %d", code)
	}
	tc = tls.Client(conn, &tls.Config{ServerName: "allowed.test", RootCAs: pool, NextProtos: []string{"http/1.1"}})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake for allowed.test: %v", err)
	}
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(tc)
	if c := statusOf(string(b)); c != 421 {
		t.Errorf("inner Host evil.test in a tunnel to allowed.test: %d %q, want 421", c, b)
	}
	if n := evilHits.Load(); n != 0 {
		t.Errorf("evil.test saw %d requests", n)
	}
}
