package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/outbound-dev/outbound/internal/platform"
)

// mitm is mitmdump running testdata/bench/inject_addon.py, the peer the
// issue compares with. It is optional: without the binary (Debian package
// mitmproxy) the scenarios skip it with a note.
type mitm struct {
	*child
	CAPool *x509.CertPool // mitmproxy's interception CA
}

// startMitmdump runs bin on a free loopback port with its config (and CA)
// in dir, trusting upstreamCA for its upstream TLS.
func startMitmdump(ctx context.Context, bin, dir, addon, upstreamCA, token string) (*mitm, error) {
	// mitmdump takes a port number and reports no ephemeral one back: in
	// the window before it binds, another process could take the port and
	// the start would fail.
	addr, err := platform.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--listen-host", "127.0.0.1", "--listen-port", port,
		"--set", "confdir="+dir,
		"--set", "ssl_verify_upstream_trusted_ca="+upstreamCA,
		"--set", "flow_detail=0",
		"--set", "termlog_verbosity=error",
		"-s", addon)
	cmd.Env = append(os.Environ(), "BENCH_TOKEN="+token)
	log, err := os.Create(filepath.Join(dir, "mitmdump.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("mitmdump: start %s: %w", bin, err)
	}
	m := &mitm{child: newChild("mitmdump", cmd, nil)}
	m.Addr = addr
	if err := waitTCP(ctx, m.Addr, 30*time.Second); err != nil {
		m.Stop()
		return nil, fmt.Errorf("mitmdump (log in %s): %w", log.Name(), err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "mitmproxy-ca-cert.pem"))
	if err != nil {
		m.Stop()
		return nil, fmt.Errorf("mitmdump: its CA: %w", err)
	}
	m.CAPool = x509.NewCertPool()
	m.CAPool.AppendCertsFromPEM(pem)
	return m, nil
}
