package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/decision"
)

// echoListener echoes each connection on loopback.
func echoListener(t *testing.T) string {
	addr, _ := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	return addr
}

// hostPolicy is a switchable Connect policy: host -> decision; absent hosts
// are opaque tunnels.
type hostPolicy struct {
	p atomic.Pointer[map[string]decision.Connect]
}

func (hp *hostPolicy) set(m map[string]decision.Connect) { hp.p.Store(&m) }

func (hp *hostPolicy) decide(_ Instance, h string, _ int) decision.Connect {
	if d, ok := (*hp.p.Load())[h]; ok {
		return d
	}
	return decision.Connect{Allow: true, Step: "internet"}
}

var (
	denied      = decision.Connect{Step: "denied"}
	intercepted = decision.Connect{Allow: true, Intercept: true, Step: "intercept"}
)

// tunnel is an open raw tunnel through the harness.
type tunnel struct {
	c  net.Conn
	br *bufio.Reader
}

func openTunnel(t *testing.T, h *harness, target, id, token string) *tunnel {
	t.Helper()
	c, br, res := h.connect(target, basic(id, token))
	if res.StatusCode != 200 {
		t.Fatalf("CONNECT %s as %s: %d", target, id, res.StatusCode)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	return &tunnel{c, br}
}

// alive reports whether the tunnel still carries bytes both ways.
func (tn *tunnel) alive(t *testing.T) bool {
	t.Helper()
	if _, err := io.WriteString(tn.c, "ping"); err != nil {
		return false
	}
	buf := make([]byte, 4)
	_, err := io.ReadFull(tn.br, buf)
	return err == nil && string(buf) == "ping"
}

// closed waits (up to the connection's deadline) for the proxy to close
// the tunnel.
func (tn *tunnel) closed() bool {
	_, err := io.Copy(io.Discard, tn.br) // EOF (nil) or a reset when the proxy closes it
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func TestRedecideCutsWhatThePolicyNowRefuses(t *testing.T) {
	echo := echoListener(t)
	_, port, _ := net.SplitHostPort(echo)
	h := newHarness(t, harnessOpts{connectTo: []string{
		"keep.test:8000:127.0.0.1:" + port, "drop.test:8000:127.0.0.1:" + port, "tls.test:443:127.0.0.1:" + port,
	}})
	var pol hostPolicy
	pol.set(nil)
	h.backend.connect = pol.decide

	keep := openTunnel(t, h, "keep.test:8000", "a", tokenA)
	drop := openTunnel(t, h, "drop.test:8000", "a", tokenA)
	other := openTunnel(t, h, "drop.test:8000", "b", tokenB) // another instance's
	opaque443 := openTunnel(t, h, "tls.test:443", "a", tokenA)
	for _, tn := range []*tunnel{keep, drop, other, opaque443} {
		if !tn.alive(t) {
			t.Fatal("a tunnel does not echo before any change")
		}
	}

	pol.set(map[string]decision.Connect{"drop.test": denied})
	if n := h.srv.Redecide(context.Background(), "a"); n != 1 {
		t.Fatalf("Redecide(a) cut %d tunnels, want 1", n)
	}
	if !drop.closed() {
		t.Fatal("the tunnel to the now denied host was not closed")
	}
	if !keep.alive(t) || !opaque443.alive(t) {
		t.Fatal("a tunnel the policy still allows was closed")
	}
	if !other.alive(t) {
		t.Fatal("Redecide(a) closed instance b's tunnel")
	}

	// A policy that now intercepts port 443 cuts the opaque tunnel there,
	// which would bypass its handlers; "" re-decides every instance.
	pol.set(map[string]decision.Connect{"drop.test": denied, "tls.test": intercepted})
	if n := h.srv.Redecide(context.Background(), ""); n != 2 {
		t.Fatalf("Redecide(\"\") cut %d tunnels, want 2 (b's denied, a's now intercepted)", n)
	}
	if !other.closed() || !opaque443.closed() {
		t.Fatal("Redecide(\"\") left a refused tunnel open")
	}
	if !keep.alive(t) {
		t.Fatal("the allowed tunnel was closed")
	}

	m := h.srv.opts.Metrics.tunnelsCut
	if b, i := value(m.WithLabelValues("blocked")), value(m.WithLabelValues("intercepted")); b != 2 || i != 1 {
		t.Errorf("outbound_tunnels_cut_total: blocked %v, intercepted %v; want 2 and 1", b, i)
	}
	waitFor(t, func() bool {
		return strings.Count(h.logs.String(), "tunnel closed: the instance's policy changed") == 3
	})
	waitFor(t, func() bool { return strings.Count(h.logs.String(), "no longer lets this tunnel through") == 3 }) // the audit lines
	if !strings.Contains(h.logs.String(), `"host":"drop.test"`) {
		t.Errorf("the log does not name the cut tunnel's host:\n%s", h.logs.String())
	}
	waitFor(t, func() bool { return h.srv.ActiveTunnels() == 1 })
}

// A tunnel decided on the old policy, before Redecide looked, is decided
// again before it is dialled: nothing the new policy refuses is opened.
func TestRedecideCatchesTunnelDecidedBeforeTheChange(t *testing.T) {
	echo, accepts := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	_, port, _ := net.SplitHostPort(echo)
	h := newHarness(t, harnessOpts{connectTo: []string{"late.test:8000:127.0.0.1:" + port}})
	var pol hostPolicy
	pol.set(nil)
	holdFirst, decided, proceed := holdFirstCall()
	h.backend.connect = func(inst Instance, host string, port int) decision.Connect {
		d := pol.decide(inst, host, port)
		holdFirst()
		return d
	}
	answered := make(chan string, 1)
	c, br := h.raw()
	go func() {
		fmt.Fprintf(c, "CONNECT late.test:8000 HTTP/1.1\r\nHost: late.test:8000\r\nProxy-Authorization: %s\r\n\r\n", basic("a", tokenA))
		res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			answered <- err.Error()
			return
		}
		answered <- res.Status
	}()
	<-decided // allowed on the old policy, not tracked yet
	pol.set(map[string]decision.Connect{"late.test": denied})
	if n := h.srv.Redecide(context.Background(), "a"); n != 0 {
		t.Fatalf("Redecide cut %d tunnels before any was open", n)
	}
	close(proceed)
	if got, want := <-answered, strconv.Itoa(decision.StatusBlocked); !strings.HasPrefix(got, want+" ") {
		t.Fatalf("CONNECT decided before the policy change: %s, want the new policy's %s", got, want)
	}
	if n := accepts.Load(); n != 0 {
		t.Fatalf("the refused target was dialled %d times", n)
	}
}

// A tunnel the policy changes under while it is being dialled is decided
// again once tracked (Redecide did not see it), and cut.
func TestRedecideCatchesTunnelDialledDuringTheChange(t *testing.T) {
	echo := echoListener(t)
	_, port, _ := net.SplitHostPort(echo)
	dialling, proceed := make(chan struct{}), make(chan struct{})
	h := newHarness(t, harnessOpts{
		connectTo: []string{"late.test:8000:127.0.0.1:" + port},
		wrapDial: func(dial dialFunc) dialFunc {
			return func(ctx context.Context, network, addr string) (net.Conn, error) {
				close(dialling)
				<-proceed
				return dial(ctx, network, addr)
			}
		},
	})
	var pol hostPolicy
	pol.set(nil)
	h.backend.connect = pol.decide
	opened := make(chan error, 1)
	c, br := h.raw()
	go func() { opened <- connectThenClosed(c, br, "late.test:8000", basic("a", tokenA)) }()
	<-dialling
	pol.set(map[string]decision.Connect{"late.test": denied})
	if n := h.srv.Redecide(context.Background(), "a"); n != 0 {
		t.Fatalf("Redecide cut %d tunnels before any was open", n)
	}
	close(proceed)
	if err := <-opened; err != nil {
		t.Fatalf("a tunnel dialled during the policy change: %v", err)
	}
}

// The same for a captured raw stream: decided on the old policy, it is
// decided again before it is dialled, and closed.
func TestRedecideCatchesCapturedDecidedBeforeTheChange(t *testing.T) {
	echo, accepts := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	h := newHarness(t, harnessOpts{connectTo: []string{"ssh.test:2222:" + echo}})
	var denied atomic.Bool
	holdFirst, decided, proceed := holdFirstCall()
	h.backend.raw = func(Instance, string) decision.Connect {
		d := decision.Connect{Allow: !denied.Load(), Step: "internet"}
		holdFirst()
		return d
	}
	c := dialCaptured(t, h.captureListener(Capture{Host: "ssh.test", Port: 2222}))
	io.WriteString(c, "\x00hello\n")
	<-decided
	denied.Store(true)
	if n := h.srv.Redecide(context.Background(), "a"); n != 0 {
		t.Fatalf("Redecide cut %d streams before any was open", n)
	}
	close(proceed)
	if !(&tunnel{c, bufio.NewReader(c)}).closed() {
		t.Fatal("the captured stream stayed open")
	}
	waitFor(t, func() bool { return strings.Contains(h.logs.String(), "no longer lets this tunnel through") })
	if n := accepts.Load(); n != 0 {
		t.Fatalf("the refused target was dialled %d times", n)
	}
}

// connectThenClosed sends a CONNECT on c and waits for the proxy to close
// the connection, before or after answering 200 (the 200 may or may not
// have been written when the tunnel is cut); an answer other than 200, or a
// connection still open at its deadline, is an error.
func connectThenClosed(c net.Conn, br *bufio.Reader, target, auth string) error {
	c.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", target, target, auth)
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil // cut before it answered
		}
		return fmt.Errorf("reading the CONNECT answer: %w", err)
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("CONNECT answered %d; want 200 then a cut", res.StatusCode)
	}
	if !(&tunnel{c, br}).closed() {
		return errors.New("the tunnel stayed open")
	}
	return nil
}

// A CONNECT in flight when its instance is deleted opens nothing that
// outlives it: the tunnel is cut as it opens, and no trace entry is left
// for a later instance with the same id.
func TestDeletedInstanceKeepsNoTunnelOrTrace(t *testing.T) {
	echo := echoListener(t)
	h := newHarness(t, harnessOpts{})
	gone := &atomic.Bool{}
	h.backend.gone = map[string]*atomic.Bool{"a": gone}
	decided, proceed := make(chan struct{}), make(chan struct{})
	h.backend.connect = func(Instance, string, int) decision.Connect {
		close(decided)
		<-proceed
		return decision.Connect{Allow: true, Step: "internet"}
	}
	opened := make(chan error, 1)
	c, br := h.raw()
	go func() { opened <- connectThenClosed(c, br, echo, basic("a", tokenA)) }()
	<-decided
	// The delete: registry first, then the trace and the tunnels.
	gone.Store(true)
	h.har.Remove("a")
	h.srv.CloseInstance("a")
	close(proceed)
	if err := <-opened; err != nil {
		t.Fatalf("a CONNECT of a deleted instance: %v", err)
	}
	waitFor(t, func() bool { return h.srv.ActiveTunnels() == 0 })
	b, err := h.har.HAR("a")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "CONNECT") {
		t.Fatalf("the deleted instance left a trace for its id: %s", b)
	}
}

// A captured stream (the jail's or the transparent listener's) that is
// neither TLS nor HTTP was decided by Backend.Raw; a policy change decides
// it again the same way.
func TestRedecideCapturedRawStream(t *testing.T) {
	echo := echoListener(t)
	_, port, _ := net.SplitHostPort(echo)
	h := newHarness(t, harnessOpts{connectTo: []string{"ssh.test:2222:127.0.0.1:" + port}})
	var denied atomic.Bool
	h.backend.raw = func(Instance, string) decision.Connect {
		if denied.Load() {
			return decision.Connect{Step: "denied"}
		}
		return decision.Connect{Allow: true, Step: "internet"}
	}
	h.backend.connect = func(Instance, string, int) decision.Connect { // not the call that decided it
		return decision.Connect{Allow: true, Step: "internet"}
	}
	addr := h.captureListener(Capture{Host: "ssh.test", Port: 2222, Via: "jail"})
	c := dialCaptured(t, addr)
	tn := &tunnel{c, bufio.NewReader(c)}
	if !tn.alive(t) {
		t.Fatal("the captured stream does not echo")
	}
	denied.Store(true)
	if n := h.srv.Redecide(context.Background(), "a"); n != 1 {
		t.Fatalf("Redecide cut %d captured streams, want 1", n)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	if !tn.closed() {
		t.Fatal("the captured stream stayed open")
	}
}

// holdFirstCall returns hold, for a backend hook: the first call to hold
// closes decided and waits for proceed; later calls pass straight through.
func holdFirstCall() (hold func(), decided, proceed chan struct{}) {
	decided, proceed = make(chan struct{}), make(chan struct{})
	var once sync.Once
	return func() {
		first := false
		once.Do(func() { first = true; close(decided) })
		if first {
			<-proceed
		}
	}, decided, proceed
}
