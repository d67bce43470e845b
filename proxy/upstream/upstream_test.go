package upstream

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/proxy/netguard"
)

func TestParseResolve(t *testing.T) {
	tests := []struct {
		in   string
		want Override
		err  bool
	}{
		{in: "example.com:443:127.0.0.1", want: Override{"example.com", 443, "127.0.0.1", 443}},
		{in: "Example.COM.:80:10.0.0.1", want: Override{"example.com", 80, "10.0.0.1", 80}},
		{in: "example.com:443:[::1]", want: Override{"example.com", 443, "::1", 443}},
		{in: "example.com:443:::1", want: Override{"example.com", 443, "::1", 443}},
		{in: "example.com:443:1.2.3.4,5.6.7.8", want: Override{"example.com", 443, "1.2.3.4", 443}},
		{in: "[::1]:443:1.2.3.4", want: Override{"::1", 443, "1.2.3.4", 443}},
		{in: "bücher.example:443:1.2.3.4", want: Override{"xn--bcher-kva.example", 443, "1.2.3.4", 443}},
		{in: "example.com:443:other.example", err: true},
		{in: "example.com:443", err: true},
		{in: "example.com:0:1.2.3.4", err: true},
		{in: "example.com:99999:1.2.3.4", err: true},
		{in: "example.com:x:1.2.3.4", err: true},
		{in: ":443:1.2.3.4", err: true},
		{in: "example.com:443:", err: true},
		{in: "[::1:443:1.2.3.4", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseResolve(tc.in)
			if tc.err {
				if err == nil {
					t.Fatalf("got %+v, want error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseConnectTo(t *testing.T) {
	tests := []struct {
		in   string
		want Override
		err  bool
	}{
		{in: "example.com:443:127.0.0.1:8443", want: Override{"example.com", 443, "127.0.0.1", 8443}},
		{in: "example.com:443:backend.internal:9000", want: Override{"example.com", 443, "backend.internal", 9000}},
		{in: "example.com:443:[::1]:8443", want: Override{"example.com", 443, "::1", 8443}},
		{in: "EXAMPLE.com:80:Mirror.Example.:8080", want: Override{"example.com", 80, "mirror.example", 8080}},
		{in: "example.com:443:127.0.0.1", err: true},
		{in: "example.com:443:127.0.0.1:", err: true},
		{in: "example.com:443:127.0.0.1:70000", err: true},
		{in: "example.com:443::8443", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseConnectTo(tc.in)
			if tc.err {
				if err == nil {
					t.Fatalf("got %+v, want error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseOverride(f *testing.F) {
	for _, s := range []string{"example.com:443:127.0.0.1", "[::1]:443:[::1]:80", "a:1:b:2", ":::", "[", "x:1:[::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if o, err := ParseResolve(s); err == nil && (o.Host == "" || o.Port < 1 || o.Addr == "") {
			t.Fatalf("ParseResolve(%q) accepted %+v", s, o)
		}
		if o, err := ParseConnectTo(s); err == nil && (o.Host == "" || o.DialPort < 1 || o.Addr == "") {
			t.Fatalf("ParseConnectTo(%q) accepted %+v", s, o)
		}
	})
}

// kinds records what OnError is told.
type kinds struct {
	mu sync.Mutex
	k  []Kind
}

func (k *kinds) add(kind Kind) { k.mu.Lock(); k.k = append(k.k, kind); k.mu.Unlock() }
func (k *kinds) last() Kind {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.k) == 0 {
		return ""
	}
	return k.k[len(k.k)-1]
}

func serverRoots(t *testing.T, s *httptest.Server) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	p.AddCert(s.Certificate())
	return p
}

func newTransport(t *testing.T, opts Options) (*Transport, *kinds) {
	t.Helper()
	k := &kinds{}
	opts.OnError = k.add
	tr, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, k
}

func get(t *testing.T, rt http.RoundTripper, url string) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	res, err := rt.RoundTrip(req)
	if err == nil {
		t.Cleanup(func() { res.Body.Close() })
	}
	return res, err
}

// The overrides change only where the dial goes: the httptest certificate is
// valid for example.com, so a passing handshake proves SNI and verification
// used the requested host, not the dial address.
func TestOverridesKeepRequestedHost(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", r.Host, r.TLS.ServerName, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	resolve, err := ParseResolve("example.com:" + port + ":127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	connectTo, err := ParseConnectTo("example.com:443:127.0.0.1:" + port)
	if err != nil {
		t.Fatal(err)
	}
	wrongName, _ := ParseConnectTo("other.test:443:127.0.0.1:" + port)
	tr, k := newTransport(t, Options{
		Guard:     netguard.New(netguard.Options{AllowPrivate: true}),
		RootCAs:   serverRoots(t, srv),
		Resolve:   []Override{resolve},
		ConnectTo: []Override{connectTo, wrongName},
	})

	for _, url := range []string{"https://example.com:" + port + "/", "https://example.com/"} {
		res, err := get(t, tr, url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, _ := io.ReadAll(res.Body)
		want := "example.com"
		if !strings.HasPrefix(string(body), strings.TrimSuffix(strings.TrimPrefix(url, "https://"), "/")+" "+want+" HTTP/2.0") {
			t.Errorf("GET %s: upstream saw %q", url, body)
		}
	}
	// Certificate is not valid for other.test: the check still uses it.
	if _, err := get(t, tr, "https://other.test/"); Classify(err) != KindTLS {
		t.Fatalf("other.test: %v (kind %q), want tls", err, Classify(err))
	}
	if k.last() != KindTLS {
		t.Errorf("OnError last = %q, want tls", k.last())
	}
}

func TestGuardOnDial(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	tr, k := newTransport(t, Options{Guard: netguard.New(netguard.Options{})})
	for _, url := range []string{
		srv.URL,
		"http://localhost:" + port + "/",
		"http://[::ffff:127.0.0.1]:" + port + "/",
	} {
		_, err := get(t, tr, url)
		if Classify(err) != KindDeny {
			t.Errorf("GET %s: %v (kind %q), want deny", url, err, Classify(err))
		}
	}
	if k.last() != KindDeny {
		t.Errorf("OnError last = %q", k.last())
	}
	c, err := tr.DialContext(context.Background(), "tcp", srv.Listener.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("raw dial to loopback allowed")
	}
	if !netguard.IsDenyError(err) {
		t.Fatalf("raw dial: %v", err)
	}
}

// A mapping to a private address opts in that mapping's dial only: the same
// address under any other name, literal or port is refused by the guard,
// before any packet (every spelling is a literal after normalisation, so
// not even a DNS query is sent).
func TestMappingOptsInItsOwnDialOnly(t *testing.T) {
	var hits sync.Map // Host header -> true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.Host, true)
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	other, _ := strconv.Atoi(port)
	otherPort := strconv.Itoa(other%65535 + 1)
	resolve, _ := ParseResolve("resolved.test:" + port + ":127.0.0.1")
	connectTo, _ := ParseConnectTo("mapped.test:80:127.0.0.1:" + port)
	local, _ := ParseConnectTo("local.test:80:localhost:" + port)
	tr, _ := newTransport(t, Options{
		Guard:   netguard.New(netguard.Options{}),
		Resolve: []Override{resolve}, ConnectTo: []Override{connectTo, local},
	})
	for _, url := range []string{
		"http://resolved.test:" + port + "/", "http://mapped.test/", "http://local.test/", "http://MAPPED.test./",
	} {
		res, err := get(t, tr, url)
		if err != nil {
			t.Fatalf("GET %s through its mapping: %v", url, err)
		}
		res.Body.Close()
	}
	for _, h := range []string{
		"127.0.0.1", "localhost", "127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "[::ffff:127.0.0.1]",
		"[::1]", "local.test.localhost",
	} {
		for _, p := range []string{port, otherPort} {
			url := "http://" + h + ":" + p + "/"
			_, err := get(t, tr, url)
			if !netguard.IsDenyError(err) {
				t.Errorf("GET %s: %v, want the guard's refusal", url, err)
			}
			if c, err := tr.DialContext(context.Background(), "tcp", strings.TrimPrefix(strings.TrimSuffix(url, "/"), "http://")); err == nil {
				c.Close()
				t.Errorf("raw dial %s allowed", url)
			} else if !netguard.IsDenyError(err) {
				t.Errorf("raw dial %s: %v, want the guard's refusal", url, err)
			}
		}
	}
	var seen []string
	hits.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
	sort.Strings(seen)
	if want := []string{"MAPPED.test.", "local.test", "mapped.test", "resolved.test:" + port}; !slices.Equal(seen, want) {
		t.Errorf("the upstream saw hosts %q, want only the mapped ones %q", seen, want)
	}
}

func TestSelfRefusedEvenWhenPrivateAllowed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	self := netip.MustParseAddrPort(srv.Listener.Addr().String())
	tr, _ := newTransport(t, Options{Guard: netguard.New(netguard.Options{AllowPrivate: true, Self: []netip.AddrPort{self}})})
	if _, err := get(t, tr, srv.URL); Classify(err) != KindDeny {
		t.Fatalf("self: %v", err)
	}
}

func TestErrorKinds(t *testing.T) {
	open := netguard.New(netguard.Options{AllowPrivate: true})

	// refused: a port nobody listens on.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()

	// timeout: headers never come.
	stall := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(stall) })

	// tls: a plain HTTP server answering a TLS client; and an unknown CA.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plain.Close)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(tlsSrv.Close)

	tr, k := newTransport(t, Options{Guard: open, ResponseHeaderTimeout: 200 * time.Millisecond, RootCAs: x509.NewCertPool()})
	tests := []struct {
		url  string
		want Kind
	}{
		{"http://" + closed + "/", KindRefused},
		{slow.URL, KindTimeout},
		{"https://" + plain.Listener.Addr().String() + "/", KindTLS},
		{tlsSrv.URL, KindTLS},
	}
	for _, tc := range tests {
		_, err := get(t, tr, tc.url)
		if got := Classify(err); got != tc.want {
			t.Errorf("GET %s: %v: kind %q, want %q", tc.url, err, got, tc.want)
		}
		if k.last() != tc.want {
			t.Errorf("GET %s: OnError %q, want %q", tc.url, k.last(), tc.want)
		}
	}
}

func TestClassifyTable(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	tests := []struct {
		err  error
		want Kind
	}{
		{op(&netguard.DenyError{Reason: "loopback"}), KindDeny},
		{op(&net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}), KindDNS},
		{fmt.Errorf("wrapped: %w", &net.DNSError{Err: "timeout", IsTimeout: true}), KindDNS},
		{context.DeadlineExceeded, KindTimeout},
		{op(os.ErrDeadlineExceeded), KindTimeout},
		{errors.New("tls: handshake failure"), KindTLS},
		{x509.UnknownAuthorityError{}, KindTLS},
		{io.ErrUnexpectedEOF, KindOther},
		{errors.New("boom"), KindOther},
	}
	for _, tc := range tests {
		k := Classify(tc.err)
		if k != tc.want {
			t.Errorf("Classify(%v) = %q, want %q", tc.err, k, tc.want)
		}
	}
	if Classify(nil) != "" {
		t.Error("Classify(nil) not empty")
	}
}

func TestRoots(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(srv.Close)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	pool, err := Roots(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := newTransport(t, Options{Guard: netguard.New(netguard.Options{AllowPrivate: true}), RootCAs: pool})
	if _, err := get(t, tr, srv.URL); err != nil {
		t.Fatalf("with extra root: %v", err)
	}
	if _, err := Roots([]byte("not pem")); err == nil {
		t.Fatal("Roots accepted a file with no certificate")
	}
}

func TestNewRequiresGuard(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a guard succeeded")
	}
}
