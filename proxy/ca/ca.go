// Package ca owns the per-instance ephemeral certificate authorities used for
// HTTPS interception: generating a CA in memory, minting and caching leaf
// certificates for intercepted hosts, and a registry of CAs by instance id.
//
// A CA's private key lives only in memory. Nothing in this package returns,
// logs or serialises it: the only export of an Authority is its certificate.
// It does not decide which connections are intercepted; the proxy asks.
package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// Defaults for Options fields left zero.
const (
	DefaultValidity  = 30 * 24 * time.Hour
	DefaultCacheSize = 1024
)

// backdate absorbs clock skew between the proxy and the sandbox.
const backdate = time.Hour

// renewBefore re-mints a cached leaf this close to its expiry, so a handshake
// never gets a leaf that expires mid-connection.
const renewBefore = time.Hour

// Options configure every Authority made by New or a Registry.
type Options struct {
	// Validity is the CA's lifetime from its creation, and bounds every
	// leaf's. Default 30 days. A CA is never rotated: the sandbox trusts the
	// one certificate it was given, so a new CA would break it at once.
	Validity time.Duration
	// CacheSize is the number of leaves kept per CA. Default 1024.
	CacheSize int
	// OnLeafLookup, when set, is told whether each Leaf call hit the cache;
	// the proxy counts it in metrics.
	OnLeafLookup func(hit bool)
	// Now replaces time.Now in tests.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Validity <= 0 {
		o.Validity = DefaultValidity
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Authority is one instance's CA. It is safe for concurrent use.
type Authority struct {
	id      string
	opts    Options
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey // never leaves this struct

	// leafKey is shared by every leaf of this CA. It lives in the same
	// process memory as the CA key, which can sign a leaf for any name, so a
	// key per leaf would add no isolation; sharing it saves a key generation
	// per host and memory per cached leaf. Instances never share it.
	leafKey *ecdsa.PrivateKey

	cache *lru.Cache[string, *tls.Certificate]
	mint  singleflight.Group
}

// New generates a fresh CA for the instance id.
func New(id string, opts Options) (*Authority, error) {
	if id == "" {
		return nil, errors.New("ca: empty instance id")
	}
	opts = opts.withDefaults()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate key for instance %q: %w", id, err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate leaf key for instance %q: %w", id, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := opts.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         truncate("outbound "+id, 64),
			Organization:       []string{"outbound"},
			OrganizationalUnit: []string{truncate("instance "+id, 64)},
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: create CA certificate for instance %q: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse CA certificate for instance %q: %w", id, err)
	}
	cache, err := lru.New[string, *tls.Certificate](opts.CacheSize)
	if err != nil {
		return nil, fmt.Errorf("ca: leaf cache: %w", err)
	}
	return &Authority{
		id:      id,
		opts:    opts,
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:     key,
		leafKey: leafKey,
		cache:   cache,
	}, nil
}

// ID is the instance id the CA was made for.
func (a *Authority) ID() string { return a.id }

// CertPEM is the CA certificate in PEM, for the sandbox's trust store.
func (a *Authority) CertPEM() []byte {
	out := make([]byte, len(a.certPEM))
	copy(out, a.certPEM)
	return out
}

// Certificate is the parsed CA certificate (public data only).
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// NotAfter is when the CA expires; from then on Leaf fails with ErrExpired.
func (a *Authority) NotAfter() time.Time { return a.cert.NotAfter }

// Leaf returns a certificate for host, which must already be normalised (see
// handlers/host): a DNS name, or an IP literal which gets an IP SAN. Leaves
// are cached; concurrent first calls for one host mint once.
func (a *Authority) Leaf(host string) (*tls.Certificate, error) {
	if host == "" {
		return nil, errors.New("ca: leaf for empty host")
	}
	now := a.opts.Now()
	if !now.Before(a.cert.NotAfter) {
		// A leaf minted now would already be expired: say why instead.
		return nil, fmt.Errorf("%w: instance %q, at %s; delete and create the instance again (or restart outbound) for a new CA", ErrExpired, a.id, a.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if c, ok := a.cache.Get(host); ok && now.Add(renewBefore).Before(c.Leaf.NotAfter) {
		a.lookup(true)
		return c, nil
	}
	a.lookup(false)
	v, err, _ := a.mint.Do(host, func() (any, error) {
		// Another caller may have minted while we waited for the group.
		if c, ok := a.cache.Get(host); ok && now.Add(renewBefore).Before(c.Leaf.NotAfter) {
			return c, nil
		}
		c, err := a.mintLeaf(host, now)
		if err != nil {
			return nil, err
		}
		a.cache.Add(host, c)
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

func (a *Authority) lookup(hit bool) {
	if a.opts.OnLeafLookup != nil {
		a.opts.OnLeafLookup(hit)
	}
}

func (a *Authority) mintLeaf(host string, now time.Time) (*tls.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(a.opts.Validity)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   truncate(host, 64),
			Organization: []string{"outbound"},
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, a.leafKey.Public(), a.key)
	if err != nil {
		return nil, fmt.Errorf("ca: mint leaf for %q (instance %q): %w", host, a.id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse leaf for %q: %w", host, err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{der},
		PrivateKey:  a.leafKey,
		Leaf:        leaf,
	}, nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("ca: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// ErrExists is returned by Registry.Add for an id that already has a CA.
var ErrExists = errors.New("ca: instance already has a CA")

// ErrExpired is returned by Leaf once the CA's lifetime is over.
var ErrExpired = errors.New("ca: the instance CA has expired")

// Registry holds the CAs of the live instances, by instance id.
type Registry struct {
	opts Options
	mu   sync.RWMutex
	cas  map[string]*Authority
}

// NewRegistry makes an empty registry whose CAs use opts.
func NewRegistry(opts Options) *Registry {
	return &Registry{opts: opts, cas: make(map[string]*Authority)}
}

// Add generates a CA for a new (or restored) instance.
func (r *Registry) Add(id string) (*Authority, error) {
	// Generate outside the lock: keygen is the slow part.
	a, err := New(id, r.opts)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cas[id]; ok {
		return nil, fmt.Errorf("%w: %q", ErrExists, id)
	}
	r.cas[id] = a
	return a, nil
}

// Get returns the instance's CA.
func (r *Registry) Get(id string) (*Authority, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.cas[id]
	return a, ok
}

// NextExpiry is the earliest NotAfter among the CAs held; ok is false
// when there are none.
func (r *Registry) NextExpiry() (t time.Time, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, a := range r.cas {
		if na := a.NotAfter(); !ok || na.Before(t) {
			t, ok = na, true
		}
	}
	return t, ok
}

// Remove forgets the instance's CA. Its key becomes unreachable (and is
// collected) once connections already using it end; new interceptions for
// the id fail.
func (r *Registry) Remove(id string) {
	r.mu.Lock()
	a, ok := r.cas[id]
	delete(r.cas, id)
	r.mu.Unlock()
	if ok {
		a.cache.Purge()
	}
}
