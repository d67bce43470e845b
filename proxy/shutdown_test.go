package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
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

// shutdownStarted waits until Shutdown has closed the proxy listener.
func shutdownStarted(t *testing.T, h *harness) {
	t.Helper()
	waitUntil(t, "Shutdown to stop accepting", func() bool {
		c, err := net.Dial("tcp", h.addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}

func shutdownLater(h *harness) <-chan error {
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shut <- h.srv.Shutdown(ctx)
	}()
	return shut
}

// A captured connection still being decided when Shutdown starts is
// drained like a request: Shutdown waits for it, and it is served.
func TestShutdownWaitsForCapturedInProgress(t *testing.T) {
	echo, _ := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	h := newHarness(t, harnessOpts{connectTo: []string{"raw.test:7000:" + echo}})
	entered, release := make(chan struct{}), make(chan struct{})
	h.backend.raw = func(Instance, string) decision.Connect {
		close(entered)
		<-release
		return decision.Connect{Allow: true, Step: "internet"}
	}
	c := dialCaptured(t, h.captureListener(Capture{Host: "raw.test", Port: 7000}))
	const msg = "\x00\x01hello\n"
	io.WriteString(c, msg)
	<-entered
	if n := h.srv.active.count(); n != 1 {
		t.Fatalf("%d running while a captured connection is decided, want 1", n)
	}

	shut := shutdownLater(h)
	shutdownStarted(t, h)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a captured connection was being decided", err)
	default:
	}
	close(release)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through the drained connection: %q, %v", got, err)
	}
	c.Close()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown after the captured connection ended: %v", err)
	}
}

// A captured connection arriving during the grace period is refused
// before it is decided or dialled.
func TestShutdownRefusesNewCaptured(t *testing.T) {
	echo, accepts := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	h := newHarness(t, harnessOpts{connectTo: []string{"raw.test:7000:" + echo}})
	var decided atomic.Int64
	h.backend.raw = func(Instance, string) decision.Connect {
		decided.Add(1)
		return decision.Connect{Allow: true, Step: "internet"}
	}
	// A request in flight holds the grace period open.
	entered, release := make(chan struct{}), make(chan struct{})
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		close(entered)
		<-release
		return textResponse(200, "finished"), decision.Outcome{Step: "handler"}
	}
	held := make(chan error, 1)
	go func() {
		res, err := h.client("a", tokenA, "a").Get("http://hold.test/")
		if err == nil {
			res.Body.Close()
		}
		held <- err
	}()
	<-entered
	addr := h.captureListener(Capture{Host: "raw.test", Port: 7000})

	shut := shutdownLater(h)
	shutdownStarted(t, h)
	c := dialCaptured(t, addr)
	io.WriteString(c, "\x00\x01hello\n")
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a connection captured during the grace period", n)
	}
	waitUntil(t, "the refusal's log line", func() bool { return strings.Contains(h.logs.String(), `"step":"shutdown"`) })
	if n, d := accepts.Load(), decided.Load(); n != 0 || d != 0 {
		t.Fatalf("a connection captured during the grace period was decided %d and dialled %d times", d, n)
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatalf("the request in flight: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// A captured connection still waiting for its first bytes when the grace
// period ends is closed by the cut, not waited for.
func TestShutdownCutsSilentCaptured(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := dialCaptured(t, h.captureListener(Capture{Host: "web.test", Port: 443}))
	waitUntil(t, "the captured connection to be served", func() bool { return h.srv.active.count() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace at all
	err := h.srv.Shutdown(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "closed 1 ") {
		t.Fatalf("Shutdown with a silent captured connection: %v", err)
	}
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a cut connection", n)
	}
}
