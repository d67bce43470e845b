package engine

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/handlers/chain"
)

const gib = 1 << 30

// zeros is an endless reader that allocates nothing.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// peakHeap samples HeapInuse until stop is called and returns the peak.
func peakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

// A 1 GiB download and a 1 GiB upload pass through `return fetch(request)`
// with the heap staying small: nothing is buffered.
func TestGigabytePassThrough(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 2 GiB over loopback")
	}
	var uploaded atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			n, _ := io.Copy(io.Discard, r.Body)
			uploaded.Store(n)
			return
		}
		w.Header().Set("Content-Length", "1073741824")
		_, _ = io.Copy(w, io.LimitReader(zeros{}, gib))
	}))
	t.Cleanup(srv.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	// The handler's budget runs until the upstream answers, which for the
	// upload is after the whole GiB: under -race on a busy machine that
	// takes far more than 5 s. The test measures the heap, not the speed.
	pl := newPool(t, "cred.js", PoolOptions{Size: 1, Fetch: tr, Timeout: 10 * time.Minute})

	runtime.GC()
	stop := peakHeap()

	resp, err := pl.Invoke(context.Background(), call("default", chain.HandlerNamed, "passthrough", httptest.NewRequest("GET", srv.URL+"/dl", nil)))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != gib {
		t.Fatalf("download: %d bytes, %v", n, err)
	}

	req := httptest.NewRequest("POST", srv.URL+"/ul", io.LimitReader(zeros{}, gib))
	req.ContentLength = gib
	resp, err = pl.Invoke(context.Background(), call("default", chain.HandlerNamed, "passthrough", req))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if uploaded.Load() != gib {
		t.Fatalf("upload: upstream got %d bytes", uploaded.Load())
	}

	peak := stop()
	t.Logf("peak heap in use: %.1f MiB", float64(peak)/(1<<20))
	if peak > 64<<20 {
		t.Fatalf("peak heap %d MiB, want under 64 MiB", peak>>20)
	}
}
