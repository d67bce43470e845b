package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"
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
		u := bareProxy(b)
		u.User = url.UserPassword("a", tokenA) // same client work as outbound's
		runProxyClients(b, u, up.URL)
	})

	b.Run("outbound", func(b *testing.B) {
		h := newHarness(b, harnessOpts{discardLogs: true})
		runProxyClients(b, &url.URL{Scheme: "http", User: url.UserPassword("a", tokenA), Host: h.addr}, up.URL)
	})
}

// BenchmarkProxyHTTPRatio runs the two proxies of BenchmarkProxyHTTP in
// alternating batches, so load from other processes on the machine hits both
// alike, and reports outbound's throughput relative to bare (target >= 0.9).
// "audit-log" formats one JSON audit line per request (to io.Discard), as
// outbound always does; "no-audit-log" disables it by level, isolating what
// the line costs from the rest of the request path.
func BenchmarkProxyHTTPRatio(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello from upstream\n")
	}))
	b.Cleanup(up.Close)
	for _, variant := range []struct {
		name  string
		noLog bool
	}{{"audit-log", false}, {"no-audit-log", true}} {
		b.Run(variant.name, func(b *testing.B) {
			h := newHarness(b, harnessOpts{discardLogs: true, noAuditLog: variant.noLog})
			// The bare proxy gets (and strips) the same credentials, so
			// both clients do the same work.
			bareURL := bareProxy(b)
			bareURL.User = url.UserPassword("a", tokenA)
			bare := proxyClient(b, bareURL)
			ours := proxyClient(b, &url.URL{Scheme: "http", User: url.UserPassword("a", tokenA), Host: h.addr})
			const batch, workers = 100, 4
			var tBare, tOurs time.Duration
			n := 0
			for b.Loop() {
				tBare += runBatch(b, bare, up.URL, batch, workers)
				tOurs += runBatch(b, ours, up.URL, batch, workers)
				n += batch
			}
			b.ReportMetric(float64(tBare.Nanoseconds())/float64(n), "bare-ns/req")
			b.ReportMetric(float64(tOurs.Nanoseconds())/float64(n), "outbound-ns/req")
			b.ReportMetric(float64(tBare)/float64(tOurs), "throughput-ratio")
		})
	}
}

func proxyClient(b *testing.B, proxyURL *url.URL) *http.Client {
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func runBatch(b *testing.B, c *http.Client, target string, batch, workers int) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range batch / workers {
				res, err := c.Get(target)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// bareProxy is the baseline: a plain net/http forwarding proxy with the same
// transport tuning, the same server timeouts (any exposed server needs
// ReadHeaderTimeout) and hop-by-hop stripping, and nothing else.
func bareProxy(b *testing.B) *url.URL {
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: true, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	bare := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	bare.Config.ReadHeaderTimeout = DefaultReadHeaderTimeout
	bare.Config.IdleTimeout = DefaultIdleTimeout
	bare.Config.MaxHeaderBytes = DefaultMaxHeaderBytes
	bare.Start()
	b.Cleanup(bare.Close)
	return &url.URL{Scheme: "http", Host: bare.Listener.Addr().String()}
}

func runProxyClients(b *testing.B, proxyURL *url.URL, target string) {
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 64, DialContext: (&net.Dialer{}).DialContext}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	getParallel(b, c, target)
}

// BenchmarkProxyDownload streams a large body through outbound and through
// the bare forwarder, alternating, and reports each one's throughput and
// outbound's ratio to bare. Both read the upstream with their own copy loop;
// the difference is copyBody (buffer size, flushing) against io.Copy.
func BenchmarkProxyDownload(b *testing.B) {
	const size = 64 << 20
	chunk := make([]byte, 256<<10)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	b.Cleanup(up.Close)
	h := newHarness(b, harnessOpts{discardLogs: true})
	bareURL := bareProxy(b)
	bareURL.User = url.UserPassword("a", tokenA)
	bare := proxyClient(b, bareURL)
	ours := proxyClient(b, &url.URL{Scheme: "http", User: url.UserPassword("a", tokenA), Host: h.addr})
	get := func(c *http.Client) time.Duration {
		start := time.Now()
		res, err := c.Get(up.URL)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || n != size {
			b.Fatalf("read %d of %d bytes: %v", n, size, err)
		}
		return time.Since(start)
	}
	var tBare, tOurs time.Duration
	n := 0
	for b.Loop() {
		tBare += get(bare)
		tOurs += get(ours)
		n++
	}
	mib := float64(size) / (1 << 20) * float64(n)
	b.ReportMetric(mib/tBare.Seconds(), "bare-MiB/s")
	b.ReportMetric(mib/tOurs.Seconds(), "outbound-MiB/s")
	b.ReportMetric(float64(tBare)/float64(tOurs), "throughput-ratio")
}

// BenchmarkProxyHTTPSIntercepted is keep-alive HTTPS through interception
// (one TLS handshake per client connection, then requests inside the
// tunnel), HTTP/1.1 as the load harness speaks it and HTTP/2, with a
// trivial forwarding Backend and the audit line formatted to io.Discard.
func BenchmarkProxyHTTPSIntercepted(b *testing.B) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello from upstream\n")
	}))
	up.EnableHTTP2 = false
	up.StartTLS()
	b.Cleanup(up.Close)
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	for _, proto := range []string{"http1", "h2"} {
		b.Run(proto, func(b *testing.B) {
			h := newHarness(b, harnessOpts{discardLogs: true, roots: roots,
				connectTo: []string{"example.com:443:127.0.0.1:" + portOf(up.Listener.Addr().String())}})
			c := h.client("a", tokenA, "a")
			tr := c.Transport.(*http.Transport)
			tr.MaxIdleConnsPerHost = 64
			if proto == "http1" {
				tr.ForceAttemptHTTP2 = false
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			getParallel(b, c, "https://example.com/small")
		})
	}
}

func TestIsEventStream(t *testing.T) {
	tests := []struct {
		ct   string
		want bool
	}{
		{"text/event-stream", true},
		{"Text/Event-Stream; charset=utf-8", true},
		{" TEXT/EVENT-STREAM ", true},
		{"application/json", false},
		{"", false},
		{"text/event-streams", false},
		{"application/x-event-stream", false},
		{"text/plain; x=event-stream", false},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.ct != "" {
			h.Set("Content-Type", tt.ct)
		}
		if got := isEventStream(h); got != tt.want {
			t.Errorf("isEventStream(%q) = %v, want %v", tt.ct, got, tt.want)
		}
	}
}

func BenchmarkIsEventStream(b *testing.B) {
	h := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	b.ReportAllocs()
	for b.Loop() {
		if isEventStream(h) {
			b.Fatal("json is not an event stream")
		}
	}
}

// BenchmarkProxyHTTPSNewConn is scenario 3 of the load harness in one
// process: every request is a new client connection, a CONNECT and a full
// TLS handshake with a leaf from the instance CA (cached after the first).
// The client offers X25519 only and keeps no session cache, as the harness.
func BenchmarkProxyHTTPSNewConn(b *testing.B) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from upstream\n")
	}))
	up.EnableHTTP2 = false
	up.StartTLS()
	b.Cleanup(up.Close)
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	h := newHarness(b, harnessOpts{discardLogs: true, roots: roots,
		connectTo: []string{"example.com:443:127.0.0.1:" + portOf(up.Listener.Addr().String())}})
	c := h.client("a", tokenA, "a")
	tr := c.Transport.(*http.Transport)
	tr.DisableKeepAlives = true
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.TLSClientConfig.CurvePreferences = []tls.CurveID{tls.X25519}
	getParallel(b, c, "https://example.com/small")
}

// getParallel GETs url from every benchmark goroutine until b.N is done,
// draining each body and failing on anything but 200.
func getParallel(b *testing.B, c *http.Client, url string) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := c.Get(url)
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
