package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newCA(t testing.TB, id string, opts Options) *Authority {
	t.Helper()
	a, err := New(id, opts)
	if err != nil {
		t.Fatalf("New(%q): %v", id, err)
	}
	return a
}

func poolOf(t testing.TB, a *Authority) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(a.CertPEM()) {
		t.Fatal("CertPEM does not parse")
	}
	return p
}

func TestCACertificate(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	a := newCA(t, "sbx-1", Options{Now: func() time.Time { return now }})
	block, rest := pem.Decode(a.CertPEM())
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("CertPEM is not exactly one certificate: %q", a.CertPEM())
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: IsCA=%v MaxPathLen=%d zero=%v", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("key usage %v lacks cert sign", c.KeyUsage)
	}
	if !strings.Contains(c.Subject.String(), "sbx-1") {
		t.Errorf("subject %q does not name the instance", c.Subject)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T is not ECDSA P-256", c.PublicKey)
	}
	if got := c.NotAfter.Sub(now); got != DefaultValidity {
		t.Errorf("validity after now = %v, want %v", got, DefaultValidity)
	}
	if c.NotBefore.After(now) {
		t.Errorf("NotBefore %v after now", c.NotBefore)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
}

func TestLeafVerifies(t *testing.T) {
	a := newCA(t, "a", Options{})
	pool := poolOf(t, a)
	tests := []struct {
		host string
		ip   bool
	}{
		{"example.com", false},
		{"xn--bcher-kva.example", false},
		{"127.0.0.1", true},
		{"2001:db8::1", true},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			c, err := a.Leaf(tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := c.PrivateKey.(*ecdsa.PrivateKey); !ok {
				t.Errorf("leaf key %T, want ECDSA", c.PrivateKey)
			}
			if tc.ip != (len(c.Leaf.IPAddresses) == 1) {
				t.Errorf("IP SANs %v for %q", c.Leaf.IPAddresses, tc.host)
			}
			if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: tc.host, Roots: pool}); err != nil {
				t.Errorf("verify with own CA: %v", err)
			}
			if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool}); err == nil {
				t.Error("leaf verified for another host")
			}
		})
	}
}

// Invariant 4: one instance's CA never validates another's interception.
func TestCrossInstanceNeverValidates(t *testing.T) {
	a := newCA(t, "a", Options{})
	b := newCA(t, "b", Options{})
	for _, host := range []string{"example.com", "10.0.0.1"} {
		leafB, err := b.Leaf(host)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leafB.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: poolOf(t, a)}); err == nil {
			t.Fatalf("A's CA validated B's leaf for %s", host)
		} else if !errors.As(err, new(x509.UnknownAuthorityError)) {
			t.Errorf("want UnknownAuthorityError, got %v", err)
		}
	}
	// Same id, new CA (as after a restart): the old trust does not carry over.
	a2 := newCA(t, "a", Options{})
	leaf, _ := a2.Leaf("example.com")
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: poolOf(t, a)}); err == nil {
		t.Fatal("a fresh CA for the same id validated under the old CA")
	}
	// Distinct leaf keys per instance.
	la, _ := a.Leaf("example.com")
	lb, _ := b.Leaf("example.com")
	if la.PrivateKey.(*ecdsa.PrivateKey).Equal(lb.PrivateKey) {
		t.Fatal("two instances share a leaf key")
	}
}

func TestLeafTLSHandshake(t *testing.T) {
	a := newCA(t, "a", Options{})
	b := newCA(t, "b", Options{})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return a.Leaf(h.ServerName) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(roots *x509.CertPool) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{ServerName: "api.example.com", RootCAs: roots})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(poolOf(t, a)); err != nil {
		t.Fatalf("handshake trusting A: %v", err)
	}
	if err := dial(poolOf(t, b)); err == nil {
		t.Fatal("handshake trusting B succeeded against A's leaf")
	}
}

func TestLeafCacheAndSingleflight(t *testing.T) {
	var hits, misses atomic.Int64
	a := newCA(t, "a", Options{OnLeafLookup: func(hit bool) {
		if hit {
			hits.Add(1)
		} else {
			misses.Add(1)
		}
	}})
	const n = 32
	certs := make([]*tls.Certificate, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := a.Leaf("concurrent.example")
			if err != nil {
				t.Error(err)
			}
			certs[i] = c
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if certs[i] != certs[0] {
			t.Fatalf("call %d got a different leaf: minted more than once", i)
		}
	}
	if hits.Load()+misses.Load() != n {
		t.Errorf("lookups %d+%d, want %d", hits.Load(), misses.Load(), n)
	}
	again, _ := a.Leaf("concurrent.example")
	if again != certs[0] {
		t.Error("cached lookup minted again")
	}
}

func TestLeafRenewedNearExpiry(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a := newCA(t, "a", Options{Validity: 48 * time.Hour, Now: clock})
	first, _ := a.Leaf("x.example")
	if !first.Leaf.NotAfter.Equal(a.Certificate().NotAfter) {
		t.Errorf("leaf NotAfter %v exceeds or differs from CA %v", first.Leaf.NotAfter, a.Certificate().NotAfter)
	}
	now = now.Add(47*time.Hour + 30*time.Minute)
	second, _ := a.Leaf("x.example")
	if second == first {
		t.Fatal("a leaf within the renewal window was served from cache")
	}
}

// An expired CA refuses to mint, with an error that says so and what to
// do, rather than handing the sandbox an expired leaf.
func TestExpiredCARefusesLeaves(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a := newCA(t, "sbx-old", Options{Validity: 48 * time.Hour, Now: clock})
	if want := now.Add(48 * time.Hour); !a.NotAfter().Equal(want) {
		t.Fatalf("NotAfter = %v, want %v", a.NotAfter(), want)
	}
	if _, err := a.Leaf("x.example"); err != nil {
		t.Fatal(err)
	}
	now = a.NotAfter().Add(-time.Second)
	if l, err := a.Leaf("x.example"); err != nil || l.Leaf.NotAfter.After(a.NotAfter()) {
		t.Fatalf("leaf a second before expiry: %v", err)
	}
	now = a.NotAfter()
	_, err := a.Leaf("x.example")
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("Leaf at expiry: %v, want ErrExpired", err)
	}
	for _, want := range []string{`"sbx-old"`, "2030-01-03T00:00:00Z", "create the instance again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestRegistryNextExpiry(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r := NewRegistry(Options{Validity: 24 * time.Hour, Now: func() time.Time { return now }})
	if _, ok := r.NextExpiry(); ok {
		t.Fatal("NextExpiry of an empty registry is set")
	}
	r.Add("first")
	now = now.Add(time.Hour)
	r.Add("second")
	if got, ok := r.NextExpiry(); !ok || !got.Equal(time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("NextExpiry = %v %v, want the first CA's", got, ok)
	}
	r.Remove("first")
	if got, _ := r.NextExpiry(); !got.Equal(time.Date(2030, 1, 2, 1, 0, 0, 0, time.UTC)) {
		t.Fatalf("NextExpiry after removing the first = %v", got)
	}
}

func TestCacheBounded(t *testing.T) {
	a := newCA(t, "a", Options{CacheSize: 4})
	for i := range 10 {
		if _, err := a.Leaf(fmt.Sprintf("h%d.example", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.cache.Len(); n != 4 {
		t.Fatalf("cache holds %d leaves, want 4", n)
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry(Options{})
	a, err := r.Add("sbx-1")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Get("sbx-1"); !ok || got != a {
		t.Fatal("Get after Add")
	}
	if _, err := r.Add("sbx-1"); !errors.Is(err, ErrExists) {
		t.Fatalf("second Add: %v, want ErrExists", err)
	}
	if _, err := r.Add(""); err == nil {
		t.Fatal("Add with empty id succeeded")
	}
	r.Remove("sbx-1")
	if _, ok := r.Get("sbx-1"); ok {
		t.Fatal("Get after Remove")
	}
	r.Remove("sbx-1") // idempotent
	b, err := r.Add("sbx-1")
	if err != nil || b == a {
		t.Fatalf("re-Add after Remove: %v (same CA: %v)", err, b == a)
	}
}

func BenchmarkLeafMint(b *testing.B) {
	a := newCA(b, "bench", Options{CacheSize: b.N + 1})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := a.Leaf(fmt.Sprintf("h%d.example.com", i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkLeafCached(b *testing.B) {
	a := newCA(b, "bench", Options{})
	if _, err := a.Leaf("cached.example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Leaf("cached.example.com"); err != nil {
			b.Fatal(err)
		}
	}
}
