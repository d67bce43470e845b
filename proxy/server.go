package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outbound-dev/outbound/internal/events"
	"github.com/outbound-dev/outbound/proxy/authlimit"
	"github.com/outbound-dev/outbound/proxy/ca"
	"github.com/outbound-dev/outbound/proxy/har"
	"github.com/outbound-dev/outbound/proxy/netguard"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxTunnels          = 4096
	DefaultReadHeaderTimeout   = 10 * time.Second
	DefaultIdleTimeout         = 120 * time.Second
	DefaultMaxHeaderBytes      = 64 << 10
	DefaultTLSHandshakeTimeout = 10 * time.Second
	DefaultMaxConns            = 16384
)

// Options configure a Server.
type Options struct {
	// Backend decides and serves every request. Required.
	Backend Backend
	// CAs holds each instance's interception CA. Required for interception.
	CAs *ca.Registry
	// Dial opens raw CONNECT tunnels. It must be the guarded upstream dialer
	// (upstream.Transport.DialContext). Required for raw tunnels.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Guard is the upstream dial guard. When set, Serve adds its listener's
	// address to the guard's self addresses, and requests addressed to any
	// self address are refused before reaching the Backend.
	Guard *netguard.Guard
	// Logger receives one audit line per request. Default slog.Default().
	Logger *slog.Logger
	// Metrics, if set, counts requests, handler durations and tunnels.
	Metrics *Metrics
	// HAR, if set, records each instance's traffic.
	HAR *har.Store
	// Events, if set, gets one decision per request or tunnel, as the audit
	// log does.
	Events *events.Hub

	MaxTunnels          int           // concurrent CONNECT tunnels; more get 503
	ReadHeaderTimeout   time.Duration // per request, outer and intercepted
	IdleTimeout         time.Duration // keep-alive idle, outer and intercepted
	MaxHeaderBytes      int
	TLSHandshakeTimeout time.Duration // interception handshake
	// MaxConns caps client connections open at once on each listener, idle
	// keep-alive ones and tunnels included; one more gets 503 and is closed.
	// Negative means no cap.
	MaxConns int
	// Failed authentications per source address: AuthFailBurst in a row,
	// then AuthFailRate per second, are allowed; past that the source gets
	// 429 without its credentials being checked (see authlimit). Zero means
	// authlimit's defaults; a negative AuthFailRate disables the limit.
	AuthFailRate  float64
	AuthFailBurst int

	// CaptureSniffTimeout is how long a captured connection to a port other
	// than 80 or 443 may stay silent before it is decided as a raw stream
	// (a protocol where the server speaks first). Default
	// DefaultSniffTimeout.
	CaptureSniffTimeout time.Duration

	// InterceptPostQuantum offers the X25519MLKEM768 hybrid key exchange on
	// the sandbox-facing (intercepted) TLS leg. Off by default: that hop is
	// normally local, and the ML-KEM share costs about a third of each
	// interception handshake. See interceptCurves and SECURITY.md. The
	// upstream leg always keeps Go's defaults, post-quantum included.
	InterceptPostQuantum bool
}

// Server is the proxy listener: identity, CONNECT, interception, forwarding
// of requests to the Backend and of responses back to the sandbox.
type Server struct {
	opts      Options
	log       *slog.Logger
	guard     *netguard.Guard    // self-address matcher (Options.Guard or a private one)
	authLimit *authlimit.Limiter // nil when disabled

	outer   *http.Server // the proxy listener(s)
	inner   *http.Server // intercepted TLS connections, HTTP/1.1 and HTTP/2
	innerLn *connListener
	innerWG sync.WaitGroup
	// startMu orders starting the inner server (first Serve) against
	// Shutdown, so innerWG.Add never races innerWG.Wait.
	startMu   sync.Mutex
	innerUp   bool
	shutStart bool
	// shutting is set when Shutdown starts; the outer server stops
	// accepting by itself, captured connections check this.
	shutting atomic.Bool

	baseCtx context.Context // every request's and tunnel's; cancelled when Shutdown forces
	cancel  context.CancelFunc

	tunnelSlots atomic.Int64
	mu          sync.Mutex
	relays      map[*relay]struct{} // open CONNECT tunnels and relayed WebSockets
	mitm        sync.Map            // *tls.Conn -> *relay, for the inner server
	active      activity            // handler goroutines, tunnels, relays and captured connections included

	connRefusedLog atomic.Int64  // unix nanos of the last MaxConns log line
	policyEpoch    atomic.Uint64 // Redecide calls so far

	idPrefix string
	idSeq    atomic.Uint64
}

// New builds a Server. It listens on nothing until Serve.
func New(opts Options) (*Server, error) {
	if opts.Backend == nil {
		return nil, errors.New("proxy: Options.Backend is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxTunnels <= 0 {
		opts.MaxTunnels = DefaultMaxTunnels
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opts.TLSHandshakeTimeout <= 0 {
		opts.TLSHandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if opts.CaptureSniffTimeout <= 0 {
		opts.CaptureSniffTimeout = DefaultSniffTimeout
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = DefaultMaxConns
	}
	var prefix [4]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		return nil, fmt.Errorf("proxy: request id prefix: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		guard:    opts.Guard,
		baseCtx:  ctx,
		cancel:   cancel,
		relays:   make(map[*relay]struct{}),
		idPrefix: hex.EncodeToString(prefix[:]),
		innerLn:  newConnListener(),
		authLimit: authlimit.New(authlimit.Options{
			Rate: opts.AuthFailRate, Burst: opts.AuthFailBurst, Logger: opts.Logger, What: "proxy credentials",
		}),
	}
	if s.guard == nil {
		s.guard = netguard.New(netguard.Options{})
	}
	errLog := slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)
	s.outer = &http.Server{
		Handler:           http.HandlerFunc(s.serveProxy),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ErrorLog:          errLog,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.inner = &http.Server{
		Handler:           http.HandlerFunc(s.serveIntercepted),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ErrorLog:          errLog,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if t, ok := s.mitm.Load(c); ok {
				return context.WithValue(ctx, relayKey{}, t)
			}
			return ctx
		},
		ConnState: func(c net.Conn, state http.ConnState) {
			switch state {
			case http.StateClosed:
				if t, ok := s.mitm.LoadAndDelete(c); ok {
					t.(*relay).finish()
				}
			case http.StateHijacked: // the WebSocket relay now owns it and finishes the tunnel
				s.mitm.Delete(c)
			}
		},
	}
	return s, nil
}

// Serve accepts proxy connections on ln until Shutdown. It may be called for
// several listeners. The listener's address becomes a self address.
func (s *Server) Serve(ln net.Listener) error {
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
		s.guard.AddSelf(ap)
	}
	s.startMu.Lock()
	if s.shutStart {
		s.startMu.Unlock()
		return http.ErrServerClosed
	}
	if !s.innerUp {
		s.innerUp = true
		s.innerWG.Add(1)
		go func() {
			defer s.innerWG.Done()
			_ = s.inner.Serve(s.innerLn) // returns when Shutdown closes innerLn
		}()
	}
	s.startMu.Unlock()
	if s.opts.MaxConns > 0 {
		ln = &limitListener{Listener: ln, max: int64(s.opts.MaxConns), refused: s.connRefused}
	}
	return s.outer.Serve(ln)
}

// connRefused notes a connection refused by MaxConns: counted as a request
// (step conn_limit, 503), logged at most once a minute.
func (s *Server) connRefused() {
	s.opts.Metrics.request(stepConnLimit, http.StatusServiceUnavailable)
	now := time.Now().UnixNano()
	last := s.connRefusedLog.Load()
	if now-last >= int64(time.Minute) && s.connRefusedLog.CompareAndSwap(last, now) {
		s.log.Warn("too many open client connections; refusing new ones with 503", "max_conns", s.opts.MaxConns)
	}
}

// CloseInstance closes every open tunnel and relayed connection of the
// instance. Call it when the instance is deleted (after Instance.Alive
// turns false), so nothing it opened outlives its credentials.
func (s *Server) CloseInstance(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.relays {
		if t.inst.ID() == id {
			t.cut()
		}
	}
}

// ActiveTunnels is the number of open CONNECT tunnels.
func (s *Server) ActiveTunnels() int { return int(s.tunnelSlots.Load()) }

func (s *Server) newRequestID() string {
	b := make([]byte, 0, len(s.idPrefix)+1+20)
	b = append(append(b, s.idPrefix...), '-')
	return string(strconv.AppendUint(b, s.idSeq.Add(1), 10))
}

type requestIDKey struct{}

// RequestID is the id the proxy gave the request (it appears in the audit
// log and the HAR), or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// connListener hands already-accepted (intercepted, TLS-terminated)
// connections to the inner http.Server.
type connListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closer sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) push(c net.Conn) error {
	select {
	case l.ch <- c:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closer.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }
