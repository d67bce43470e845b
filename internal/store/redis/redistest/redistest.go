// Package redistest runs a real redis-server for tests: on a free loopback
// port, in a temp dir, with an append-only file fsynced on every write, so
// that stopping and starting it again keeps every acknowledged write.
//
// Where redis-server is not installed the test is skipped, saying so;
// when CI is set (.ci/run sets it) it fails instead, so CI never skips.
package redistest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/platform"
)

// Options configure Start.
type Options struct {
	// Password, if set, is required of clients (requirepass).
	Password string
	// Users are ACL rules, one user each: "NAME on >PASS ~pattern +@cat …".
	Users []string
	// TLS serves TLS only, with a throwaway self-signed certificate for
	// 127.0.0.1 (CAFile), and no plain port.
	TLS bool
}

// Server is a redis-server started by a test.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	addr string // 127.0.0.1:PORT
	opts Options

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
}

// Binary returns the path of redis-server, or skips (or fails, under
// RequireEnv) the test when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is not installed, and CI requires the tests that need it to run (apt-get install redis-server)")
		}
		t.Skip("redis-server is not installed (apt-get install redis-server); skipping a test that needs a real Redis")
	}
	return bin
}

// Start runs a redis-server until the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{t: t, bin: Binary(t), dir: t.TempDir(), opts: opts}
	if opts.TLS {
		if err := s.writeCert(); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	for try := 0; try < 5; try++ {
		if s.addr, err = platform.FreeLoopbackAddr(); err != nil {
			t.Fatal(err)
		}
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Addr is HOST:PORT.
func (s *Server) Addr() string { return s.addr }

// URL is the store URL of database 0, with the password if there is one,
// and for TLS the certificate to trust.
func (s *Server) URL() string {
	scheme, query := "redis", ""
	if s.opts.TLS {
		scheme, query = "rediss", "?tls_ca="+url.QueryEscape(s.CAFile())
	}
	if s.opts.Password != "" {
		return fmt.Sprintf("%s://:%s@%s/0%s", scheme, s.opts.Password, s.Addr(), query)
	}
	return scheme + "://" + s.Addr() + "/0" + query
}

// CAFile is the PEM of the TLS server's self-signed certificate.
func (s *Server) CAFile() string { return filepath.Join(s.dir, "tls-cert.pem") }

// writeCert makes the throwaway TLS certificate and key of the server.
func (s *Server) writeCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redistest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.CAFile(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.dir, "tls-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

// Dir is the server's working directory (its append-only file).
func (s *Server) Dir() string { return s.dir }

func (s *Server) start() error {
	_, portNum, err := net.SplitHostPort(s.addr)
	if err != nil {
		return err
	}
	port := "--port"
	if s.opts.TLS {
		port = "--tls-port"
	}
	args := []string{
		port, portNum, "--bind", "127.0.0.1", "--dir", s.dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--daemonize", "no", "--logfile", "", "--loglevel", "notice",
	}
	if s.opts.Password != "" {
		args = append(args, "--requirepass", s.opts.Password)
	}
	if s.opts.TLS {
		args = append(args, "--port", "0", "--tls-cert-file", s.CAFile(), "--tls-key-file", filepath.Join(s.dir, "tls-key.pem"),
			"--tls-auth-clients", "no")
	}
	for _, u := range s.opts.Users {
		args = append(append(args, "--user"), strings.Fields(u)...)
	}
	cmd := exec.Command(s.bin, args...)
	// A test binary killed by its timeout skips Cleanup; take the server
	// down with it.
	platform.DieWithParent(cmd)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	ready := make(chan struct{})
	exit := make(chan struct{})
	var logMu sync.Mutex
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if !signalled && strings.Contains(sc.Text(), "Ready to accept connections") {
				close(ready)
				signalled = true
			}
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(exit)
	}()
	select {
	case <-ready:
	case <-exit:
		logMu.Lock()
		defer logMu.Unlock()
		return fmt.Errorf("redis-server on %s exited: %s", s.addr, strings.TrimSpace(log.String()))
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-exit
		return errors.New("redis-server did not become ready within 60s")
	}
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()
	return nil
}

// Stop shuts the server down as an operator would (SIGTERM), waiting for
// it to exit.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Kill kills the server with SIGKILL, waiting for it to exit.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	<-exit
}

// Restart starts the server again on the same port and directory, after
// Stop or Kill.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("restarting redis-server: %v", err)
	}
}
