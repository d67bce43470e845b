package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// BenchmarkProxyHTTP compares keep-alive plain-HTTP throughput through
// outbound (auth, normalisation, header stripping, HAR, metrics, audit log,
// a trivial forwarding Backend on the shared upstream transport) with a bare
// net/http forwarding proxy, in the same run. Target: outbound >= 0.9x bare.
func BenchmarkProxyHTTP(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello from upstream\n")
	}))
	b.Cleanup(up.Close)

	b.Run("bare", func(b *testing.B) {
		tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: true, DisableCompression: true}
		b.Cleanup(tr.CloseIdleConnections)
		bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			out := r.Clone(r.Context())
			out.RequestURI = ""
			stripHop(out.Header)
			if r.ContentLength == 0 {
				out.Body = nil
			}
			res, err := tr.RoundTrip(out)
			if err != nil {
				http.Error(w, "bad gateway", http.StatusBadGateway)
				return
			}
			defer res.Body.Close()
			stripHop(res.Header)
			for k, vv := range res.Header {
				w.Header()[k] = vv
			}
			w.WriteHeader(res.StatusCode)
			io.Copy(w, res.Body)
		}))
		b.Cleanup(bare.Close)
		runProxyClients(b, &url.URL{Scheme: "http", Host: bare.Listener.Addr().String()}, up.URL)
	})

	b.Run("outbound", func(b *testing.B) {
		h := newHarness(b, harnessOpts{discardLogs: true})
		runProxyClients(b, &url.URL{Scheme: "http", User: url.UserPassword("a", tokenA), Host: h.addr}, up.URL)
	})
}

func runProxyClients(b *testing.B, proxyURL *url.URL, target string) {
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 64, DialContext: (&net.Dialer{}).DialContext}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := c.Get(target)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
}
