package app_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// HTTP parsing: malformed or ambiguous requests get 400 (or 431) and the
// connection closed, and nothing reaches the upstream.
func TestMalformedRequestsRefused(t *testing.T) {
	var smuggled atomic.Int64
	up, hits := countingUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/smuggled" {
			smuggled.Add(1)
		}
		if r.Header.Get("Content-Length") != "" && len(r.TransferEncoding) > 0 {
			t.Errorf("the upstream got both Content-Length and Transfer-Encoding")
		}
		io.WriteString(w, "upstream")
	}))
	srv := apptest.Start(t, app.Config{
		Script:    securityDir + "policy.js",
		ConnectTo: []string{"up.test:80:" + upstreamIP + ":" + portOf(up)},
	})
	id, token := credsOf(t, srv.Create(t, "open", "Open"))
	auth := "Proxy-Authorization: " + basicAuth(id, token) + "\r\n"
	start := "POST http://up.test/ HTTP/1.1\r\nHost: up.test\r\n" + auth
	// Content-Length with Transfer-Encoding: net/http lets chunked win and
	// drops Content-Length (RFC 9112 6.3), so the proxy forwards one
	// unambiguous request. The bytes after the chunked body are a second
	// request, which must authenticate on its own and never reaches upstream.
	for _, req := range []string{
		start + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://up.test/smuggled HTTP/1.1\r\nHost: up.test\r\n\r\n",
		start + "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nGET http://up.test/smuggled HTTP/1.1\r\nHost: up.test\r\n\r\n",
	} {
		reply, _ := rawExchange(t, srv.ProxyAddr().String(), req, time.Second)
		if !strings.Contains(reply, "407 Proxy Authentication Required") {
			t.Errorf("the smuggled request was not refused: %.300q", reply)
		}
	}
	if n := smuggled.Load(); n != 0 {
		t.Errorf("the smuggled request reached the upstream %d times", n)
	}

	for _, tc := range []struct {
		name, req string
	}{
		{"duplicate Content-Length", start + "Content-Length: 0\r\nContent-Length: 44\r\n\r\n"},
		{"TE not chunked", start + "Transfer-Encoding: gzip\r\n\r\n"}, // 501 from net/http
		{"TE obfuscated", start + "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n"},
		{"oversized header block", start + strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 80) + "\r\n"},
		{"over-long request line", "GET http://up.test/" + strings.Repeat("a", 100<<10) + " HTTP/1.1\r\nHost: up.test\r\n" + auth + "\r\n"},
		{"NUL in header", start + "X-A: a\x00b\r\nContent-Length: 0\r\n\r\n"},
		{"bare CR in header", start + "X-A: a\rb\r\nContent-Length: 0\r\n\r\n"},
		{"bare CR line ending", "GET http://up.test/ HTTP/1.1\rHost: up.test\r\n" + auth + "\r\n"},
		{"space before colon", start + "Content-Length : 5\r\n\r\nhello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			reply, closed := rawExchange(t, srv.ProxyAddr().String(), tc.req, 3*time.Second)
			code := statusOf(reply)
			if code != 400 && code != 431 && code != 501 {
				t.Errorf("got %d, want 400 or 431: %.200q", code, reply)
			}
			if !closed {
				t.Errorf("the connection stayed open")
			}
			if n := hits.Load() - before; n != 0 {
				t.Errorf("the upstream saw %d requests", n)
			}
		})
	}
}
