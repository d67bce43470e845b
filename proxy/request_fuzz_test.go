package proxy

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/outbound-dev/outbound/internal/host"
)

// FuzzProxyRequest feeds the proxy's request handler whatever net/http
// parses out of arbitrary bytes. Whatever it is, the Backend sees only
// authenticated, absolute http requests whose host is canonical and which
// carry no proxy credentials or hop-by-hop headers.
func FuzzProxyRequest(f *testing.F) {
	auth := "Proxy-Authorization: " + basic("a", tokenA) + "\r\n"
	for _, s := range []string{
		"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n" + auth + "\r\n",
		"GET http://EXAMPLE.com./a?b HTTP/1.1\r\nHost: evil.com\r\n" + auth + "Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\n",
		"GET http://0x7f.1:8080/ HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n",
		"GET http://[::ffff:127.0.0.1]/ HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n",
		"GET http://allowed.com@evil.com/ HTTP/1.1\r\nHost: allowed.com\r\n" + auth + "\r\n",
		"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: example.com\r\n" + auth + "\r\n",
		"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: Basic YTp3cm9uZw==\r\n\r\n",
		"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n" + auth + "\r\n",
		"GET http://xn--80ak6aa92e.com/ HTTP/1.1\r\nHost: x\r\n" + auth + "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	} {
		f.Add(s)
	}
	h := newHarness(f, harnessOpts{discardLogs: true})
	h.backend.trivial = false
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		return textResponse(http.StatusOK, "ok"), decision.Outcome{Step: "internet"}
	}
	hopByHop := []string{"Proxy-Authorization", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "X-Drop"}
	f.Fuzz(func(t *testing.T, raw string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil || req.Method == http.MethodConnect {
			return // net/http's parser refused it, or it needs a real connection
		}
		// X-Drop is hop-by-hop only where Connection names it.
		dropNamed := false
		for _, v := range req.Header.Values("Connection") {
			for _, tok := range strings.Split(v, ",") {
				dropNamed = dropNamed || strings.EqualFold(strings.TrimSpace(tok), "X-Drop")
			}
		}
		req.RemoteAddr = "127.0.0.1:40000"
		req = req.WithContext(context.Background())
		before := h.backend.count()
		rec := httptest.NewRecorder()
		h.srv.serveProxy(rec, req)
		if rec.Code < 100 || rec.Code > 599 {
			t.Fatalf("status %d for %q", rec.Code, raw)
		}
		if h.backend.count() == before {
			return
		}
		if !strings.Contains(raw, basic("a", tokenA)) {
			t.Fatalf("an unauthenticated request reached the backend: %q", raw)
		}
		seen := h.backend.last()
		u, err := req.URL.Parse(seen.url)
		if err != nil || u.Scheme != "http" || u.User != nil {
			t.Fatalf("backend saw URL %q for %q", seen.url, raw)
		}
		if canon, err := host.Normalize(u.Hostname()); err != nil || canon != u.Hostname() {
			t.Fatalf("backend saw a non-canonical host %q (%v) for %q", u.Hostname(), err, raw)
		}
		for _, k := range hopByHop {
			if k == "X-Drop" && !dropNamed {
				continue
			}
			if _, ok := seen.header[k]; ok {
				t.Fatalf("backend saw %s for %q", k, raw)
			}
		}
	})
}
