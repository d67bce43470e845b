// Package apptest starts a whole outbound server, and the local
// upstreams it talks to, for tests in other packages: real listeners, real
// TLS, the real store in a temp dir.
package apptest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/testlog"
	"github.com/outbound-dev/outbound/proxy/ca"
	"github.com/outbound-dev/outbound/proxy/control"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

// Server is a running outbound.
type Server struct {
	*app.App
	Admin *client.Client
	Log   *testlog.Buffer
	stop  func() error
}

// Stop shuts the server down as a signal does (draining for the grace
// period) and returns what Serve returned. Cleanup stops it too.
func (s *Server) Stop() error { return s.stop() }

// Start runs a server for cfg, filling in loopback ephemeral listeners, a
// temp state dir and a debug logger into a testlog.Buffer. It stops at cleanup.
func Start(t testing.TB, cfg app.Config) *Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Admin == "" {
		cfg.Admin = "127.0.0.1:0"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	logs := &testlog.Buffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := app.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("starting outbound: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(2 * time.Minute): // the grace period plus a busy machine
			return errors.New("outbound did not stop within 2 minutes")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("outbound stopped with: %v", err)
		}
	})
	return &Server{App: srv, Admin: client.New(srv.AdminAddr().String(), cfg.AdminToken), Log: logs, stop: stop}
}

// Create creates an instance through the control API.
func (s *Server) Create(t testing.TB, id, class string) control.Created {
	t.Helper()
	c, err := s.Admin.Create(context.Background(), id, class)
	if err != nil {
		t.Fatalf("creating instance %q: %v", id, err)
	}
	return c
}

// Client returns an HTTP client that uses the instance's proxy URL and
// trusts only its CA, as a sandbox configured by `outbound run` would.
func Client(t testing.TB, c control.Created) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CAPEM)) {
		t.Fatalf("instance %s: CA PEM does not parse", c.ID)
	}
	return ClientWithRoots(t, c.ProxyURL, pool)
}

// ClientWithRoots is Client with other roots and any proxy URL.
func ClientWithRoots(t testing.TB, proxyURL string, roots *x509.CertPool) *http.Client {
	t.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatalf("proxy URL: %v", err)
	}
	tr := &http.Transport{
		Proxy:             http.ProxyURL(u),
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// TLSUpstream is a local HTTPS server that answers for a public name.
type TLSUpstream struct {
	*httptest.Server
	CAFile string // PEM of the CA that signed its certificate
	Port   int
}

// NewTLSUpstream serves h over TLS on loopback with a certificate for names,
// signed by a throwaway CA written to a temp file for --upstream-ca.
func NewTLSUpstream(t testing.TB, h http.Handler, names ...string) *TLSUpstream {
	t.Helper()
	authority, err := ca.New("test-upstream", ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		name := hello.ServerName
		if name == "" {
			name = names[0]
		}
		return authority.Leaf(name)
	}, NextProtos: []string{"h2", "http/1.1"}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := os.WriteFile(f, authority.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &TLSUpstream{Server: srv, CAFile: f, Port: srv.Listener.Addr().(*net.TCPAddr).Port}
}

// ConnectTo returns the --connect-to value sending host:port to the upstream.
func (u *TLSUpstream) ConnectTo(host string, port int) string {
	return fmt.Sprintf("%s:%d:127.0.0.1:%d", host, port, u.Port)
}

// ServeTCP serves each connection to a new loopback listener with serve,
// until the test ends, and returns the listener's address.
func ServeTCP(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return ln.Addr().String()
}
