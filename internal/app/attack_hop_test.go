package app_test

import (
	"crypto/tls"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// Hop-by-hop headers stop at the proxy in both directions: the instance
// token in Proxy-Authorization never goes upstream, and neither do headers
// a client or upstream names in Connection.
func TestHopByHopNotForwarded(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "upstream-private")
		w.Write([]byte("ok"))
	})
	plainUp, _ := countingUpstream(t, h)
	tlsUp := apptest.NewTLSUpstream(t, h, "tls.test")
	srv := apptest.Start(t, app.Config{
		Script:     securityDir + "policy.js",
		ConnectTo:  []string{"plain.test:80:" + upstreamIP + ":" + portOf(plainUp), tlsUp.ConnectTo("tls.test", 443)},
		UpstreamCA: []string{tlsUp.CAFile},
	})
	created := srv.Create(t, "open", "Open")
	_, token := credsOf(t, created)
	c := apptest.Client(t, created)
	// HTTP/1.1 inside the tunnel too: HTTP/2 has no Connection header.
	tr := c.Transport.(*http.Transport)
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	for _, u := range []string{"http://plain.test/", "https://tls.test/"} {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Connection", "X-Hop")
		req.Header.Set("X-Hop", "client-private")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("X-End-To-End", "kept")
		if strings.HasPrefix(u, "https") { // inside the tunnel, sent by hand
			req.Header.Set("Proxy-Authorization", basicAuth("open", token))
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", u, resp.StatusCode)
		}
		// (Over HTTP/2 upstream, as tls.test speaks, the upstream's own
		// server drops Connection, so X-Resp-Hop arrives end-to-end.)
		if v := resp.Header.Get("X-Resp-Hop"); v != "" && resp.Request.URL.Scheme == "http" {
			t.Errorf("%s: the sandbox got the upstream's hop-by-hop header %q", u, v)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("upstream saw %d requests, want 2", len(seen))
	}
	for i, hdr := range seen {
		if hdr.Get("X-End-To-End") != "kept" {
			t.Errorf("request %d: an end-to-end header was dropped: %v", i, hdr)
		}
		for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization"} {
			if hdr.Get(k) != "" {
				t.Errorf("request %d: upstream got hop-by-hop %s", i, k)
			}
		}
		for k, vv := range hdr {
			if strings.Contains(k+strings.Join(vv, ","), token) {
				t.Errorf("request %d: upstream got the instance token in %s", i, k)
			}
		}
	}
}
