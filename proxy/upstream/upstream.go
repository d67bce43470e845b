// Package upstream owns the way out to the network: one tuned http.Transport
// shared by the proxy's forwarding path and by fetch() in handlers, the
// guarded dialer used for it and for raw CONNECT tunnels, the operator's
// --resolve and --connect-to overrides, and the classification of upstream
// errors into the kinds that metrics count and the sandbox sees as a status.
//
// Every dial goes through the private-network guard (netguard) in
// net.Dialer.Control. Overrides change only where a dial goes: the request,
// its policy, SNI and the certificate check keep the requested host. An
// override whose ADDR is an IP literal (or localhost) is the operator's
// opt-in for that one dial: its address passes the guard on that
// override's dialer only, never for another name, literal or port. It does
// not decide policy.
//
// Hosts are normalised before dialling, so every IP literal spelling
// (127.1, 2130706433, 0x7f.0.0.1) is dialled as the literal it is, and
// localhost as loopback: neither ever becomes a DNS query.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/outbound-dev/outbound/internal/host"
	"github.com/outbound-dev/outbound/proxy/netguard"
)

// Defaults for Options fields left zero.
const (
	DefaultDialTimeout           = 10 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 120 * time.Second // slow APIs (LLMs) answer late
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultMaxIdleConns          = 1024
	// Handlers send their fetches concurrently, as many as there are
	// requests in flight: with fewer idle connections kept per host than
	// that, a busy host's connections are closed after each answer and
	// dialled again, a TLS handshake each time.
	DefaultMaxIdleConnsPerHost = 256
)

// Options configure a Transport.
type Options struct {
	// Guard checks every resolved address before it is dialled. Required.
	Guard *netguard.Guard
	// RootCAs verifies upstream certificates. Nil means the system roots;
	// see Roots to add --upstream-ca files.
	RootCAs *x509.CertPool
	// Resolve and ConnectTo are the parsed --resolve and --connect-to flags.
	Resolve   []Override
	ConnectTo []Override

	DialTimeout           time.Duration
	TLSHandshakeTimeout   time.Duration
	ResponseHeaderTimeout time.Duration
	IdleConnTimeout       time.Duration
	MaxIdleConns          int
	MaxIdleConnsPerHost   int

	// OnError, when set, is told the kind of every failed dial or round
	// trip, for metrics.
	OnError func(Kind)
}

// Transport is the shared upstream transport. Safe for concurrent use.
type Transport struct {
	rt      *http.Transport
	dialer  *net.Dialer
	routes  map[string]route // "host:port" (normalised) -> where an override sends it
	onError func(Kind)
}

// route is where an override sends a dial.
type route struct {
	host   string      // ADDR: an IP literal, localhost or a name
	port   int         // PORT2
	dialer *net.Dialer // the opt-in dialer when ADDR is literal, else the shared one
}

// New builds the Transport.
func New(opts Options) (*Transport, error) {
	if opts.Guard == nil {
		return nil, errors.New("upstream: a netguard.Guard is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.DialTimeout, DefaultDialTimeout)
	def(&opts.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
	def(&opts.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	def(&opts.IdleConnTimeout, DefaultIdleConnTimeout)
	if opts.MaxIdleConns <= 0 {
		opts.MaxIdleConns = DefaultMaxIdleConns
	}
	if opts.MaxIdleConnsPerHost <= 0 {
		opts.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	newDialer := func(control func(string, string, syscall.RawConn) error) *net.Dialer {
		return &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second, Control: control}
	}
	t := &Transport{
		dialer:  newDialer(opts.Guard.Control),
		routes:  make(map[string]route),
		onError: opts.OnError,
	}
	// --connect-to is applied over --resolve when both name a target, as the
	// more specific instruction.
	for _, o := range append(append([]Override(nil), opts.Resolve...), opts.ConnectTo...) {
		r := route{host: o.Addr, port: o.DialPort, dialer: t.dialer}
		if lits := literals(o.Addr, o.DialPort); lits != nil {
			r.dialer = newDialer(opts.Guard.ControlAllowing(lits...))
		}
		t.routes[o.key()] = r
	}
	t.rt = &http.Transport{
		Proxy:                 nil, // never chain to the environment's proxy
		DialContext:           t.dial,
		TLSClientConfig:       &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   opts.TLSHandshakeTimeout,
		ResponseHeaderTimeout: opts.ResponseHeaderTimeout,
		IdleConnTimeout:       opts.IdleConnTimeout,
		MaxIdleConns:          opts.MaxIdleConns,
		MaxIdleConnsPerHost:   opts.MaxIdleConnsPerHost,
		ExpectContinueTimeout: time.Second,
		// A proxy passes Accept-Encoding and bodies through untouched.
		DisableCompression: true,
	}
	return t, nil
}

// RoundTrip sends one request upstream. req.URL must be absolute.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.rt.RoundTrip(req)
	if err != nil {
		t.report(err)
	}
	return res, err
}

// DialContext dials addr ("host:port") through the overrides and the guard,
// for raw CONNECT tunnels.
func (t *Transport) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := t.dial(ctx, network, addr)
	if err != nil {
		t.report(err)
	}
	return c, err
}

// CloseIdleConnections closes idle pooled connections.
func (t *Transport) CloseIdleConnections() { t.rt.CloseIdleConnections() }

func (t *Transport) report(err error) {
	// A request the sandbox (or a handler) abandoned is not an upstream failure.
	if t.onError != nil && !errors.Is(err, context.Canceled) {
		t.onError(Classify(err))
	}
}

// dial dials addr ("host:port") as normalised: through its override, if
// one names it, else as itself on the shared (guarded, no opt-in) dialer.
func (t *Transport) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	h, port, err := host.SplitHostPort(addr, "")
	if err != nil {
		return nil, fmt.Errorf("upstream: dial %s: %w", addr, err)
	}
	if r, ok := t.routes[joinHostPort(h, port)]; ok {
		return dialHost(ctx, r.dialer, network, r.host, r.port)
	}
	return dialHost(ctx, t.dialer, network, h, port)
}

// dialHost dials a canonical host: localhost names as loopback (IPv4
// first), anything else as given.
func dialHost(ctx context.Context, d *net.Dialer, network, h string, port int) (net.Conn, error) {
	targets := []string{joinHostPort(h, port)}
	if host.IsLocalhost(h) {
		targets = []string{joinHostPort("127.0.0.1", port), joinHostPort("::1", port)}
	}
	var first error
	for _, a := range targets {
		c, err := d.DialContext(ctx, network, a)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = fmt.Errorf("upstream: dial %s: %w", a, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// literals returns the addresses a dial to ADDR:port reaches without
// resolving a name, or nil when ADDR is a name that needs DNS.
func literals(addr string, port int) []netip.AddrPort {
	if host.IsLocalhost(addr) {
		return []netip.AddrPort{
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port)),
			netip.AddrPortFrom(netip.IPv6Loopback(), uint16(port)),
		}
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil
	}
	return []netip.AddrPort{netip.AddrPortFrom(ip, uint16(port))}
}

func joinHostPort(h string, port int) string { return net.JoinHostPort(h, strconv.Itoa(port)) }

// Override sends dials for Host:Port to Addr:DialPort.
type Override struct {
	Host     string // normalised
	Port     int
	Addr     string // IP or name to dial
	DialPort int
}

func (o Override) key() string { return joinHostPort(o.Host, o.Port) }

// ParseResolve parses curl's --resolve HOST:PORT:ADDR. ADDR is an IP address,
// IPv6 optionally in brackets; when curl's list form is given only the first
// address is used.
func ParseResolve(s string) (Override, error) {
	parts, err := splitColons(s, 3)
	if err != nil {
		return Override{}, fmt.Errorf("upstream: --resolve %q: want HOST:PORT:ADDR: %w", s, err)
	}
	o, err := parseTarget(parts[0], parts[1])
	if err != nil {
		return Override{}, fmt.Errorf("upstream: --resolve %q: %w", s, err)
	}
	addr, _, _ := strings.Cut(parts[2], ",")
	ip, err := host.Normalize(addr)
	if err != nil || !isIP(ip) {
		return Override{}, fmt.Errorf("upstream: --resolve %q: ADDR %q is not an IP address", s, addr)
	}
	o.Addr, o.DialPort = ip, o.Port
	return o, nil
}

// ParseConnectTo parses curl's --connect-to HOST:PORT:ADDR:PORT2, IPv6 in
// brackets. ADDR may be an IP address or localhost (opted in for this
// mapping's dial, like --resolve), or another name: that one is resolved at
// dial time and guarded like any other dial, with no opt-in, since what it
// resolves to is not the operator's choice.
func ParseConnectTo(s string) (Override, error) {
	parts, err := splitColons(s, 4)
	if err != nil {
		return Override{}, fmt.Errorf("upstream: --connect-to %q: want HOST:PORT:ADDR:PORT2: %w", s, err)
	}
	o, err := parseTarget(parts[0], parts[1])
	if err != nil {
		return Override{}, fmt.Errorf("upstream: --connect-to %q: %w", s, err)
	}
	addr, err := host.Normalize(parts[2])
	if err != nil {
		return Override{}, fmt.Errorf("upstream: --connect-to %q: ADDR: %w", s, err)
	}
	p, err := parsePort(parts[3])
	if err != nil {
		return Override{}, fmt.Errorf("upstream: --connect-to %q: PORT2: %w", s, err)
	}
	o.Addr, o.DialPort = addr, p
	return o, nil
}

func parseTarget(h, p string) (Override, error) {
	n, err := host.Normalize(h)
	if err != nil {
		return Override{}, fmt.Errorf("HOST: %w", err)
	}
	port, err := parsePort(p)
	if err != nil {
		return Override{}, fmt.Errorf("PORT: %w", err)
	}
	return Override{Host: n, Port: port}, nil
}

func parsePort(p string) (int, error) {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not in 1..65535", p)
	}
	return n, nil
}

func isIP(h string) bool { return net.ParseIP(h) != nil }

// splitColons splits s into n fields on ':', keeping bracketed IPv6 whole.
func splitColons(s string, n int) ([]string, error) {
	var out []string
	for len(out) < n-1 {
		if strings.HasPrefix(s, "[") {
			end := strings.IndexByte(s, ']')
			if end < 0 || end+1 < len(s) && s[end+1] != ':' {
				return nil, errors.New("unterminated bracket")
			}
			out = append(out, s[:end+1])
			if end+1 >= len(s) {
				return nil, errors.New("too few fields")
			}
			s = s[end+2:]
			continue
		}
		i := strings.IndexByte(s, ':')
		if i < 0 {
			return nil, errors.New("too few fields")
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
	out = append(out, s)
	for _, f := range out {
		if f == "" {
			return nil, errors.New("empty field")
		}
	}
	return out, nil
}

// Roots returns the system roots plus the certificates in pems
// (--upstream-ca files). Each PEM must hold at least one certificate.
func Roots(pems ...[]byte) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for i, p := range pems {
		if !pool.AppendCertsFromPEM(p) {
			return nil, fmt.Errorf("upstream: extra root bundle %d holds no PEM certificate", i+1)
		}
	}
	return pool, nil
}

// Kind classifies an upstream failure for metrics and logs. The status the
// sandbox gets is decision.FailureStatus's.
type Kind string

// The kinds of upstream failure.
const (
	KindDeny    Kind = "deny"    // the private-network guard refused the address
	KindDNS     Kind = "dns"     // the name did not resolve
	KindRefused Kind = "refused" // connection refused
	KindTLS     Kind = "tls"     // handshake or certificate failure
	KindTimeout Kind = "timeout" // dial, handshake or response header timeout
	KindOther   Kind = "other"
)

// Classify names the kind of an upstream error.
func Classify(err error) Kind {
	var (
		dnsErr  *net.DNSError
		verify  *tls.CertificateVerificationError
		record  tls.RecordHeaderError
		alert   tls.AlertError
		unknown x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invalid x509.CertificateInvalidError
		netErr  net.Error
	)
	switch {
	case err == nil:
		return ""
	case netguard.IsDenyError(err):
		return KindDeny
	case errors.As(err, &dnsErr):
		return KindDNS
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return KindTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.As(err, &verify), errors.As(err, &record), errors.As(err, &alert),
		errors.As(err, &unknown), errors.As(err, &hostErr), errors.As(err, &invalid):
		return KindTLS
	case strings.Contains(err.Error(), "tls: "):
		// crypto/tls reports most handshake failures as plain errors.
		return KindTLS
	}
	return KindOther
}
