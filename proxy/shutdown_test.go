package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/decision"
)

// Shutdown may run before the goroutine calling Serve is scheduled (a busy
// machine, or a test that stops at once). The race detector checks that
// starting the inner server never races waiting for it, and Serve after
// Shutdown starts nothing.
func TestShutdownRacesServe(t *testing.T) {
	for range 20 {
		srv, err := New(Options{Backend: &fakeBackend{}})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if !errors.Is(err, http.ErrServerClosed) {
				t.Fatalf("Serve returned %v, want http.ErrServerClosed", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Serve did not return after Shutdown")
		}
		ln.Close()
	}
}

// A request in flight when Shutdown starts finishes within the grace
// period; Shutdown then returns nil.
func TestShutdownDrains(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	entered, release := make(chan struct{}), make(chan struct{})
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		close(entered)
		<-release
		return textResponse(200, "finished"), decision.Outcome{Step: "handler"}
	}
	got := make(chan string, 1)
	go func() {
		res, err := h.client("a", tokenA, "a").Get("http://drain.test/")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- string(b)
	}()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shut <- h.srv.Shutdown(ctx)
	}()
	close(release)
	if b := <-got; b != "finished" {
		t.Fatalf("the request in flight got %q, want its whole answer", b)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown after everything drained: %v", err)
	}
}

// A plain-HTTP stream that never ends is cut once the grace period is over:
// the request's context is cancelled, the connection closed, and Shutdown
// returns, saying what it cut.
func TestShutdownCutsEndlessStream(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cancelled := make(chan struct{})
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte("data: first\n\n"))
			<-ctx.Done() // only a cancelled request ends this stream
			close(cancelled)
			pw.CloseWithError(ctx.Err())
		}()
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: pr, ContentLength: -1},
			decision.Outcome{Step: "handler"}
	}
	res, err := h.client("a", tokenA, "a").Get("http://stream.test/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	buf := make([]byte, len("data: first\n\n"))
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		t.Fatalf("first event: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace at all
	err = h.srv.Shutdown(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "closed 1 ") {
		t.Fatalf("Shutdown with an endless stream open: %v", err)
	}
	select {
	case <-cancelled:
	default:
		t.Fatal("Shutdown returned before the stream's request context was cancelled")
	}
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Fatal("the stream ended cleanly; want it cut")
	}
}
