package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"time"
)

// upstreamHost is the name HTTPS targets use. Proxies intercept CONNECT to
// port 443 only, so the proxies map upstreamHost:443 to the upstream's
// loopback port (outbound with --connect-to); the name is in the
// upstream's certificate. ".test" is reserved and never resolves.
const upstreamHost = "upstream.bench.test"

// smallBody is the answer of /small: about the size of a small JSON API reply.
var smallBody = []byte(`{"ok":true,"msg":"hello from the bench upstream","pad":"` +
	"0123456789abcdef0123456789abcdef0123456789abcdef" + `"}` + "\n")

// Upstream is the origin every target fetches from: plain HTTP and HTTPS
// listeners on loopback with the same handler. Every request must carry
// the injected credential, so a target that skips the injection fails.
type Upstream struct {
	HTTPAddr, HTTPSAddr string
	CAPEM               []byte         // PEM of the CA that signed the HTTPS certificate
	CAPool              *x509.CertPool // the same, for Go clients
	Token               string         // the credential the proxies inject

	servers []*http.Server
}

// StartUpstream serves until ctx ends.
func StartUpstream(ctx context.Context, token string) (*Upstream, error) {
	caPEM, cert, err := upstreamCert()
	if err != nil {
		return nil, err
	}
	u := &Upstream{CAPEM: caPEM, CAPool: x509.NewCertPool(), Token: token}
	u.CAPool.AppendCertsFromPEM(caPEM)
	h := http.HandlerFunc(u.serve)
	for _, useTLS := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("upstream listen: %w", err)
		}
		// Handshakes cut off at the end of a run are expected; the clients
		// count real failures.
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		if useTLS {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
			ln = tls.NewListener(ln, srv.TLSConfig)
			u.HTTPSAddr = ln.Addr().String()
		} else {
			u.HTTPAddr = ln.Addr().String()
		}
		u.servers = append(u.servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Printf("upstream: %v\n", err)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		for _, s := range u.servers {
			s.Close()
		}
	}()
	return u, nil
}

// serve answers /small with a short body and /stream?bytes=N with N bytes
// generated on the fly, so a 1 GiB download costs the upstream no memory.
// It echoes x-bench-version, which the reload scenario's script sets.
func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+u.Token {
		http.Error(w, "missing injected credential", http.StatusForbidden)
		return
	}
	if v := r.Header.Get("X-Bench-Version"); v != "" {
		w.Header().Set("X-Bench-Version", v)
	}
	switch r.URL.Path {
	case "/small":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(smallBody)))
		w.Write(smallBody)
	case "/stream":
		n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "want ?bytes=N", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		chunk := make([]byte, 256<<10)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		for n > 0 {
			k := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	default:
		http.NotFound(w, r)
	}
}

// upstreamCert makes a throwaway CA and a leaf for upstreamHost and
// 127.0.0.1 signed by it. Both live only in this process (and the CA's
// public PEM in the run's temp dir, for the proxies to trust).
func upstreamCert() (caPEM []byte, leaf tls.Certificate, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, leaf, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outbound-bench upstream CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, leaf, fmt.Errorf("upstream CA: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, leaf, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: upstreamHost},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{upstreamHost}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, leaf, fmt.Errorf("upstream leaf: %w", err)
	}
	leaf = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), leaf, nil
}
