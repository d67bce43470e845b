package app_test

import (
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// Upstream faults on the forwarding path: refused, reset mid-body and an
// untrusted certificate each get 502 (or a cut body), and the proxy keeps
// serving.
func TestUpstreamFaults(t *testing.T) {
	reset, _ := countingUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	}))
	ok, _ := countingUpstream(t, nil)
	// Its CA is not given to the proxy: the certificate is untrusted.
	untrusted := apptest.NewTLSUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), "untrusted.test")
	srv := apptest.Start(t, app.Config{
		Script: securityDir + "policy.js",
		ConnectTo: []string{
			"refused.test:80:" + upstreamIP + ":1",
			"reset.test:80:" + upstreamIP + ":" + portOf(reset),
			"ok.test:80:" + upstreamIP + ":" + portOf(ok),
			"untrusted.test:443:127.0.0.1:" + strconv.Itoa(untrusted.Port),
		},
	})
	c := apptest.Client(t, srv.Create(t, "open", "Open"))
	c.Timeout = 5 * time.Second
	if code, _ := call(t, c, "GET", "http://refused.test/", nil); code != 502 {
		t.Errorf("connection refused: %d, want 502", code)
	}
	if code, body := call(t, c, "GET", "http://reset.test/", nil); code == 200 && len(body) == 1000000 {
		t.Errorf("a reset mid-body arrived whole")
	}
	if code, _ := call(t, c, "GET", "https://untrusted.test/", nil); code != 502 {
		t.Errorf("untrusted upstream certificate: %d, want 502", code)
	}
	if code, body := call(t, c, "GET", "http://ok.test/", nil); code != 200 {
		t.Errorf("after the faults: %d %q", code, body)
	}
}
