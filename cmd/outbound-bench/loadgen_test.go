package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"median of odd count", ms(1, 2, 3), 50, 2 * time.Millisecond},
		{"median of even count is the lower middle", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 100 values", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p99 of 10 values is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"tiny p is the min", ms(5, 6, 7), 0.001, 5 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestMergeRecomputesOverAllRuns(t *testing.T) {
	a := Stats{Requests: 2, Errors: 1, Elapsed: time.Second, FirstError: "boom",
		latencies: []time.Duration{3 * time.Millisecond, 1 * time.Millisecond}}
	b := Stats{Requests: 2, Elapsed: time.Second,
		latencies: []time.Duration{4 * time.Millisecond, 2 * time.Millisecond}}
	m := Merge(a, b)
	if m.Requests != 4 || m.Errors != 1 || m.Elapsed != 2*time.Second || m.FirstError != "boom" {
		t.Fatalf("Merge counts = %+v", m)
	}
	if m.RPS != 2 {
		t.Errorf("RPS = %v, want 2", m.RPS)
	}
	if m.P50 != 2*time.Millisecond || m.P99 != 4*time.Millisecond {
		t.Errorf("P50, P99 = %v, %v; want 2ms, 4ms", m.P50, m.P99)
	}
}

func TestRunCountsSuccessesAndFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		path       string
		wantErrors bool
	}{
		{"/ok", false},
		{"/fail", true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			start := time.Now()
			s, err := Run(context.Background(), Target{Name: tt.path, URL: srv.URL + tt.path}, 4, 20*time.Millisecond, 150*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Run took %v; it must stop by itself after warm-up + duration", took)
			}
			if tt.wantErrors {
				if s.Requests != 0 || s.Errors == 0 || !strings.Contains(s.FirstError, "status 500") {
					t.Errorf("failing target: %+v", s)
				}
				return
			}
			if s.Requests == 0 || s.Errors != 0 || s.RPS <= 0 || s.P50 <= 0 || s.P99 < s.P50 {
				t.Errorf("succeeding target: %+v", s)
			}
		})
	}
}

func TestRunThroughProxyUsesEveryInstance(t *testing.T) {
	var mu sync.Mutex
	creds := map[string]bool{}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() {
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		creds[r.Header.Get("Proxy-Authorization")] = true
		mu.Unlock()
		w.Write([]byte("proxied"))
	}))
	t.Cleanup(proxy.Close)
	p1, _ := url.Parse(strings.Replace(proxy.URL, "http://", "http://a:x@", 1))
	p2, _ := url.Parse(strings.Replace(proxy.URL, "http://", "http://b:y@", 1))
	tgt := Target{Name: "proxied", URL: "http://" + upstreamHost + "/small", Proxies: []*url.URL{p1, p2}}
	s, err := Interleave(context.Background(), []Target{tgt}, 2, 2, 10*time.Millisecond, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 1 || s[0].Requests == 0 || s[0].Errors != 0 {
		t.Fatalf("Interleave = %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(creds) != 2 {
		t.Errorf("saw %d distinct proxy credentials, want 2 (one per worker)", len(creds))
	}
}

func TestRunRefusesNonLoopback(t *testing.T) {
	public, _ := url.Parse("http://192.0.2.1:3128")
	tests := []Target{
		{Name: "direct public", URL: "http://192.0.2.1/small"},
		{Name: "direct name", URL: "http://localhost.example/small"},
		{Name: "public proxy", URL: "http://127.0.0.1/small", Proxies: []*url.URL{public}},
	}
	for _, tgt := range tests {
		t.Run(tgt.Name, func(t *testing.T) {
			if _, err := Run(context.Background(), tgt, 1, 0, time.Millisecond); err == nil || !strings.Contains(err.Error(), "loopback") {
				t.Errorf("Run(%s) err = %v, want a loopback refusal", tgt.Name, err)
			}
		})
	}
}

func TestSetVersionRewritesBenchScript(t *testing.T) {
	src, err := os.ReadFile("../../testdata/bench/inject.js")
	if err != nil {
		t.Fatal(err)
	}
	out, err := setVersion(src, "42")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `const VERSION = "42";`) || strings.Contains(string(out), `const VERSION = "0";`) {
		t.Errorf("setVersion did not replace the version:\n%s", out)
	}
	if _, err := setVersion([]byte("export default {}"), "1"); err == nil {
		t.Error("setVersion on a script without VERSION: no error")
	}
}

func TestReadRSSOfSelf(t *testing.T) {
	cur, peak, err := readRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if cur <= 0 || peak < cur {
		t.Errorf("readRSS = %d, %d; want 0 < cur <= peak", cur, peak)
	}
}

func TestReadCPUOfSelfGrows(t *testing.T) {
	before, err := readCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			x += i
		}
		after, err := readCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			return
		}
	}
	t.Errorf("CPU time did not grow after 5s of spinning (x=%d)", x)
}

func TestRunCutsOffSlowRequestsAsUnfinished(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	start := time.Now()
	s, err := Run(context.Background(), Target{Name: "slow", URL: srv.URL}, 3, 50*time.Millisecond, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Run took %v against a server that never answers", took)
	}
	if s.Requests != 0 || s.Errors != 0 || s.Unfinished != 3 {
		t.Errorf("got %d requests, %d errors, %d unfinished; want 0, 0, 3", s.Requests, s.Errors, s.Unfinished)
	}
}

// The generator's TLS must stay cheap but honest: X25519, a full handshake
// per new connection, and a certificate that must chain to the given roots
// (remembered per leaf, never skipped).
func TestRunTLSClientIsFixedAndVerifies(t *testing.T) {
	var mu sync.Mutex
	var resumed, handshakes int
	var curves []tls.CurveID
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		handshakes++
		if r.TLS.DidResume {
			resumed++
		}
		curves = append(curves, r.TLS.CurveID)
		mu.Unlock()
		w.Write([]byte("ok"))
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(srv.Close)
	good := x509.NewCertPool()
	good.AddCert(srv.Certificate())

	tests := []struct {
		name    string
		roots   *x509.CertPool
		wantErr bool
	}{
		{"trusted CA", good, false},
		{"untrusted CA", x509.NewCertPool(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			resumed, handshakes, curves = 0, 0, nil
			mu.Unlock()
			s, err := Run(context.Background(), Target{Name: tt.name, URL: srv.URL, RootCAs: tt.roots, NewConnPerRequest: true},
				2, 10*time.Millisecond, 150*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantErr {
				if s.Requests != 0 || s.Errors == 0 || !strings.Contains(s.FirstError, "certificate") {
					t.Errorf("untrusted server accepted: %+v", s)
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if s.Requests == 0 || s.Errors != 0 {
				t.Fatalf("trusted server: %+v", s)
			}
			if resumed != 0 {
				t.Errorf("%d of %d handshakes resumed a session; each new connection must be a full handshake", resumed, handshakes)
			}
			for _, c := range curves {
				if c != tls.X25519 {
					t.Fatalf("key exchange %v, want X25519 only", c)
				}
			}
		})
	}
}
