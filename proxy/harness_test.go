package proxy

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/outbound-dev/outbound/internal/testlog"
	"github.com/outbound-dev/outbound/proxy/ca"
	"github.com/outbound-dev/outbound/proxy/har"
	"github.com/outbound-dev/outbound/proxy/netguard"
	"github.com/outbound-dev/outbound/proxy/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeInst and fakeBackend stand in for handlers: the policy is a pair of
// functions a test sets; forwarding uses the real upstream transport.
type fakeInst struct {
	id, class string
	gone      *atomic.Bool // nil: never deleted
}

func (i fakeInst) ID() string    { return i.id }
func (i fakeInst) Class() string { return i.class }
func (i fakeInst) Alive() bool   { return i.gone == nil || !i.gone.Load() }

type seenRequest struct {
	inst   string
	method string
	url    string
	host   string
	proto  string
	header http.Header
}

type fakeBackend struct {
	tokens  map[string]string
	rt      http.RoundTripper
	connect func(inst Instance, host string, port int) decision.Connect
	raw     func(inst Instance, host string) decision.Connect
	handle  func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome)

	trivial bool // benchmarks: forward without recording anything
	// gone, if it has an entry for an id, is that instance's deleted flag.
	gone map[string]*atomic.Bool

	mu   sync.Mutex
	seen []seenRequest
}

func (b *fakeBackend) Authenticate(id, token string) (Instance, bool) {
	want, ok := b.tokens[id]
	if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(token)) != 1 {
		return nil, false
	}
	return fakeInst{id: id, class: "Test", gone: b.gone[id]}, true
}

func (b *fakeBackend) Connect(ctx context.Context, inst Instance, host string, port int) decision.Connect {
	if b.connect != nil {
		return b.connect(inst, host, port)
	}
	if port == 443 {
		return decision.Connect{Allow: true, Intercept: true, Step: "intercept"}
	}
	return decision.Connect{Allow: true, Step: "internet"}
}

func (b *fakeBackend) Raw(ctx context.Context, inst Instance, host string) decision.Connect {
	if b.raw != nil {
		return b.raw(inst, host)
	}
	return decision.Connect{Allow: true, Step: "internet"}
}

func (b *fakeBackend) Handle(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
	if b.trivial {
		return forward(b.rt, req, "internet")
	}
	b.mu.Lock()
	b.seen = append(b.seen, seenRequest{inst: inst.ID(), method: req.Method, url: req.URL.String(), host: req.Host, proto: req.Proto, header: req.Header.Clone()})
	b.mu.Unlock()
	if b.handle != nil {
		return b.handle(ctx, inst, req)
	}
	return forward(b.rt, req, "internet")
}

func forward(rt http.RoundTripper, req *http.Request, step string) (*http.Response, decision.Outcome) {
	res, err := rt.RoundTrip(req)
	if err != nil {
		return decision.Failure(req.Context(), req, err), decision.Outcome{Step: step, Err: err}
	}
	return res, decision.Outcome{Step: step}
}

func textResponse(status int, body string) *http.Response {
	return &http.Response{
		StatusCode:    status,
		Header:        http.Header{"Content-Type": {"text/plain"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
	}
}

func (b *fakeBackend) last() seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seen) == 0 {
		return seenRequest{}
	}
	return b.seen[len(b.seen)-1]
}

func (b *fakeBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.seen)
}

type harness struct {
	t       testing.TB
	srv     *Server
	addr    string
	backend *fakeBackend
	cas     *ca.Registry
	har     *har.Store
	reg     *prometheus.Registry
	logs    *testlog.Buffer
	up      *upstream.Transport
}

type harnessOpts struct {
	strictGuard bool // refuse private addresses upstream (default: allow, tests use loopback)
	connectTo   []string
	roots       *x509.CertPool
	maxTunnels  int
	discardLogs bool // benchmarks: format every audit line, keep none; trivial backend
	noAuditLog  bool // benchmarks: audit lines disabled by level
	postQuantum bool // Options.InterceptPostQuantum
	// wrapListener, if set, wraps the proxy's listener (to watch its conns).
	wrapListener func(net.Listener) net.Listener
	// wrapDial, if set, wraps the dialer of raw tunnels.
	wrapDial func(dialFunc) dialFunc
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

const (
	tokenA = "token-a-0123456789abcdef0123456789abcdef"
	tokenB = "token-b-fedcba9876543210fedcba9876543210"
)

func newHarness(t testing.TB, ho harnessOpts) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	guard := netguard.New(netguard.Options{AllowPrivate: !ho.strictGuard})
	var overrides []upstream.Override
	for _, s := range ho.connectTo {
		o, err := upstream.ParseConnectTo(s)
		if err != nil {
			t.Fatal(err)
		}
		overrides = append(overrides, o)
	}
	up, err := upstream.New(upstream.Options{Guard: guard, RootCAs: ho.roots, ConnectTo: overrides, OnError: m.UpstreamError})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.CloseIdleConnections)
	cas := ca.NewRegistry(ca.Options{OnLeafLookup: m.LeafLookup})
	for _, id := range []string{"a", "b"} {
		if _, err := cas.Add(id); err != nil {
			t.Fatal(err)
		}
	}
	backend := &fakeBackend{tokens: map[string]string{"a": tokenA, "b": tokenB}, rt: up, trivial: ho.discardLogs}
	logs := &testlog.Buffer{}
	var logger *slog.Logger
	if ho.noAuditLog {
		logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
	} else if ho.discardLogs {
		logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	} else {
		logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	store := har.NewStore(100)
	dial := up.DialContext
	if ho.wrapDial != nil {
		dial = ho.wrapDial(dial)
	}
	srv, err := New(Options{
		Backend:    backend,
		CAs:        cas,
		Dial:       dial,
		Guard:      guard,
		Logger:     logger,
		Metrics:    m,
		HAR:        store,
		MaxTunnels: ho.maxTunnels,

		InterceptPostQuantum: ho.postQuantum,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if ho.wrapListener != nil {
		ln = ho.wrapListener(ln)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &harness{t: t, srv: srv, addr: ln.Addr().String(), backend: backend, cas: cas, har: store, reg: reg, logs: logs, up: up}
}

// client is a proxy client for instance id with token, trusting the CA of
// trustID for intercepted HTTPS.
func (h *harness) client(id, token, trustID string) *http.Client {
	h.t.Helper()
	pool := x509.NewCertPool()
	if a, ok := h.cas.Get(trustID); ok {
		pool.AppendCertsFromPEM(a.CertPEM())
	}
	tr := &http.Transport{
		Proxy:             http.ProxyURL(&url.URL{Scheme: "http", User: url.UserPassword(id, token), Host: h.addr}),
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// raw opens a TCP connection to the proxy for hand-written requests.
func (h *harness) raw() (net.Conn, *bufio.Reader) {
	h.t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	h.t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func basic(id, token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+token))
}

// connect sends a CONNECT and returns the response (body unread when 200).
func (h *harness) connect(target, auth string) (net.Conn, *bufio.Reader, *http.Response) {
	h.t.Helper()
	c, br := h.raw()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if auth != "" {
		fmt.Fprintf(c, "Proxy-Authorization: %s\r\n", auth)
	}
	fmt.Fprint(c, "\r\n")
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		h.t.Fatalf("CONNECT %s: %v", target, err)
	}
	return c, br, res
}

// bufConn reads through br (which may hold bytes after the CONNECT answer).
type bufConn struct {
	net.Conn
	r io.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func mustBody(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// echoUpstream answers with what it saw, as headers and body.
func echoUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(echoHandler())
	t.Cleanup(srv.Close)
	return srv
}

func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var names []string
		for k := range r.Header {
			names = append(names, k)
		}
		w.Header().Set("X-Seen-Headers", strings.Join(names, ","))
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Proto", r.Proto)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), body)
	})
}
