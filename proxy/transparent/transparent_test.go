package transparent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
)

// fakeListener hands out what the test sends on results, and net.ErrClosed
// once closed.
type fakeListener struct {
	results chan acceptResult
	closed  chan struct{}
	once    sync.Once
}

type acceptResult struct {
	c   net.Conn
	err error
}

func newFakeListener() *fakeListener {
	return &fakeListener{results: make(chan acceptResult), closed: make(chan struct{})}
}

func (l *fakeListener) Accept() (net.Conn, error) {
	select {
	case r := <-l.results:
		return r.c, r.err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fakeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15001} }

var redirectedTo = netip.MustParseAddrPort("192.0.2.1:443")

// redirected stands in for the kernel: every connection was going to
// redirectedTo.
func redirected(t *testing.T) {
	orig := originalDst
	originalDst = func(net.Conn) (netip.AddrPort, error) { return redirectedTo, nil }
	t.Cleanup(func() { originalDst = orig })
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Running out of file descriptors pauses accepting; it does not end the
// listener.
func TestServeRetriesTemporaryAcceptErrors(t *testing.T) {
	redirected(t)
	ln := newFakeListener()
	got := make(chan netip.AddrPort, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(context.Background(), ln, func(_ context.Context, _ net.Conn, _, dst netip.AddrPort) { got <- dst }, quiet)
	}()
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	for range 3 { // each send waits for Serve to accept again
		ln.results <- acceptResult{err: emfile}
	}
	client, server := net.Pipe()
	defer client.Close()
	ln.results <- acceptResult{c: server}
	if dst := <-got; dst != redirectedTo {
		t.Fatalf("handler got destination %v, want %v", dst, redirectedTo)
	}
	ln.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
}

// Any other accept error ends Serve with that error.
func TestServeReturnsPermanentAcceptError(t *testing.T) {
	ln := newFakeListener()
	done := make(chan error, 1)
	go func() {
		done <- Serve(context.Background(), ln, func(context.Context, net.Conn, netip.AddrPort, netip.AddrPort) {}, quiet)
	}()
	broken := errors.New("listener broken")
	ln.results <- acceptResult{err: broken}
	if err := <-done; !errors.Is(err, broken) {
		t.Fatalf("Serve returned %v, want %v", err, broken)
	}
}

// Closing the listener stops accepting but lets open connections finish;
// ctx being done then cuts the rest.
func TestServeDrainsOnCloseCutsOnCancel(t *testing.T) {
	redirected(t)
	ln := newFakeListener()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type open struct {
		client  net.Conn
		release chan struct{}
	}
	started := make(chan *open)
	cut := make(chan struct{}, 2)
	h := func(ctx context.Context, c net.Conn, _, _ netip.AddrPort) {
		o := <-started
		select {
		case <-o.release:
			io.WriteString(c, "done")
		case <-ctx.Done():
			cut <- struct{}{}
		}
	}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h, quiet) }()
	var conns []*open
	for range 2 {
		client, server := net.Pipe()
		defer client.Close()
		o := &open{client: client, release: make(chan struct{})}
		ln.results <- acceptResult{c: server}
		started <- o
		conns = append(conns, o)
	}

	ln.Close()
	close(conns[0].release)
	b, err := io.ReadAll(conns[0].client)
	if string(b) != "done" {
		t.Fatalf("a connection open when the listener closed got %q, %v; want it to finish", b, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a connection still open", err)
	default:
	}

	cancel()
	<-cut
	if _, err := conns[1].client.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection left open was not closed by the cut")
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve after the cut: %v", err)
	}
}
