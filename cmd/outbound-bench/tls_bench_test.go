package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// BenchmarkClientHandshake is one full TLS 1.3 handshake over a pipe
// against a server set up like outbound's interception leg (X25519 or
// P-256, an ECDSA P-256 leaf from a CA): Go's default client against the
// load generator's. Both sides run in the benchmark; the server's share is
// the same in both.
func BenchmarkClientHandshake(b *testing.B) {
	ca, leaf := testChain(b)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	srvConf := &tls.Config{Certificates: []tls.Certificate{leaf}, CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
	clients := []struct {
		name string
		conf func() *tls.Config
	}{
		{"go-default", func() *tls.Config { return &tls.Config{RootCAs: roots, ServerName: "upstream.bench.test"} }},
		{"harness", func() *tls.Config {
			c := clientTLS(newChainCache(roots))
			c.ServerName = "upstream.bench.test"
			return c
		}},
	}
	for _, cl := range clients {
		b.Run(cl.name, func(b *testing.B) {
			conf := cl.conf()
			for b.Loop() {
				c, s := net.Pipe()
				errc := make(chan error, 1)
				go func() { errc <- tls.Server(s, srvConf).Handshake() }()
				if err := tls.Client(c, conf).Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				c.Close()
				s.Close()
			}
		})
	}
}

func testChain(b *testing.B) (*x509.Certificate, tls.Certificate) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		b.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		b.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{"upstream.bench.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		b.Fatal(err)
	}
	return ca, tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}
