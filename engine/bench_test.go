package engine

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/outbound-dev/outbound/handlers/chain"
)

// canned answers every request at once without a network, so a benchmark
// measures the engine and not loopback TCP.
type canned struct{}

func (canned) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("X-Auth-Token") == "" {
		panic("credential not injected")
	}
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

func benchInvoke(b *testing.B, pl *Pool, c Call) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := pl.Invoke(ctx, c)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

func BenchmarkInvokeTrivial(b *testing.B) {
	pl := newPool(b, "cred.js", PoolOptions{Size: 1, Fetch: canned{}})
	benchInvoke(b, pl, call("default", chain.HandlerNamed, "trivial", httptest.NewRequest("GET", "http://example.com/", nil)))
}

// The throughput target: a pool of 2 runtimes under parallel load.
func BenchmarkInvokeTrivialPool2Parallel(b *testing.B) {
	pl := newPool(b, "cred.js", PoolOptions{Size: 2, Fetch: canned{}})
	c := call("default", chain.HandlerNamed, "trivial", httptest.NewRequest("GET", "http://example.com/", nil))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			resp, err := pl.Invoke(ctx, c)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "invocations/s")
}

func BenchmarkInvokeAsync(b *testing.B) {
	pl := newPool(b, "cred.js", PoolOptions{Size: 1, Fetch: canned{}})
	benchInvoke(b, pl, call("default", chain.HandlerNamed, "asyncTrivial", httptest.NewRequest("GET", "http://example.com/", nil)))
}

// Credential injection without the network: new Request + headers.set +
// fetch through a RoundTripper that answers at once.
func BenchmarkCredentialInjection(b *testing.B) {
	pl := newPool(b, "cred.js", PoolOptions{Size: 1, Fetch: canned{}})
	req := httptest.NewRequest("GET", "http://api.example.com/v1/things", nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "bench")
	benchInvoke(b, pl, call("default", chain.HandlerOutbound, "", req))
}

// The same against a local httptest upstream, body read to the end.
func BenchmarkCredentialInjectionUpstream(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Auth-Token") != "s3cr3t" {
			w.WriteHeader(401)
		}
		_, _ = w.Write([]byte("ok"))
	}))
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	b.Cleanup(tr.CloseIdleConnections)
	pl := newPool(b, "cred.js", PoolOptions{Size: 1, Fetch: tr})
	req := httptest.NewRequest("GET", srv.URL+"/v1/things", nil)
	req.Header.Set("Accept", "application/json")
	c := call("default", chain.HandlerOutbound, "", req)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := pl.Invoke(ctx, c)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
