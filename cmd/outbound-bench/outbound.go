package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/outbound-dev/outbound/proxy/control/client"
)

// outboundProc is `outbound serve` as a child process, driven through its
// control API as an orchestrator would. Running it apart from the harness
// means its RSS is the proxy's alone and the load generator's garbage is
// not collected on its time.
type outboundProc struct {
	*child
	Admin  string
	Script string // its own copy of the bench script, rewritten by the reload scenario
	api    *client.Client
}

// startOutbound runs bin with the bench script copied into dir. The token
// reaches the script through a dotenv file, as secrets do in production.
func startOutbound(ctx context.Context, bin, dir, script, logLevel string, up *Upstream) (*outboundProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	src, err := os.ReadFile(script)
	if err != nil {
		return nil, fmt.Errorf("outbound: reading bench script: %w", err)
	}
	o := &outboundProc{Script: filepath.Join(dir, "inject.js")}
	caFile := filepath.Join(dir, "upstream-ca.pem")
	envFile := filepath.Join(dir, ".dev.vars")
	for name, b := range map[string][]byte{o.Script: src, caFile: up.CAPEM, envFile: []byte("BENCH_TOKEN=" + up.Token + "\n")} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			return nil, err
		}
	}
	_, httpsPort, _ := net.SplitHostPort(up.HTTPSAddr)
	// The listeners are given free ports rather than :0 because the only
	// place outbound reports :0's choice is its info log, and at info it
	// also writes an audit line per request, which the other proxies do not.
	pp, err := freePort()
	if err != nil {
		return nil, err
	}
	ap, err := freePort()
	if err != nil {
		return nil, err
	}
	proxyAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(pp))
	o.Admin = net.JoinHostPort("127.0.0.1", strconv.Itoa(ap))
	cmd := exec.Command(bin, "serve",
		"--script", o.Script, "--env-file", envFile,
		"--listen", proxyAddr, "--admin", o.Admin,
		"--state", filepath.Join(dir, "state"),
		"--allow-private", // the upstream is on loopback
		"--upstream-ca", caFile,
		"--connect-to", upstreamHost+":443:127.0.0.1:"+httpsPort,
		"--log-format", "json", "--log-level", logLevel)
	logf, err := os.Create(filepath.Join(dir, "outbound.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("outbound: start %s: %w", bin, err)
	}
	o.child = newChild("outbound", cmd, nil)
	o.Addr = proxyAddr
	o.api = client.New("http://"+o.Admin, "")
	if err := o.waitReady(ctx); err != nil {
		o.Stop()
		return nil, fmt.Errorf("outbound (log in %s): %w", logf.Name(), err)
	}
	return o, nil
}

// waitReady polls GET /v1/status until it answers, as the spec defines
// readiness.
func (o *outboundProc) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := o.api.Status(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-o.done:
			return fmt.Errorf("exited before it was ready: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after 30s: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NewInstance creates an instance and returns its proxy URL and CA.
func (o *outboundProc) NewInstance(ctx context.Context, id string) (*url.URL, *x509.CertPool, error) {
	c, err := o.api.Create(ctx, id, "")
	if err != nil {
		return nil, nil, fmt.Errorf("outbound: creating instance %s: %w", id, err)
	}
	u, err := url.Parse(c.ProxyURL)
	if err != nil {
		return nil, nil, fmt.Errorf("outbound: instance %s: bad proxy_url: %w", id, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CAPEM)) {
		return nil, nil, fmt.Errorf("outbound: instance %s: no certificate in ca_pem", id)
	}
	return u, pool, nil
}

// NewInstances creates n instances named prefix-0 … prefix-(n-1), a few
// at a time, and returns their proxy URLs in order.
func (o *outboundProc) NewInstances(ctx context.Context, prefix string, n int) ([]*url.URL, error) {
	urls := make([]*url.URL, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				c, err := o.api.Create(ctx, prefix+"-"+strconv.Itoa(i), "")
				if err == nil {
					urls[i], err = url.Parse(c.ProxyURL)
				}
				errs[i] = err
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("outbound: creating instance %s-%d: %w", prefix, i, err)
		}
	}
	return urls, nil
}

// WriteVersion rewrites the script copy with a new VERSION, as an operator
// editing the file would, via a rename so the watcher never sees half a file.
func (o *outboundProc) WriteVersion(src []byte, version string) error {
	b, err := setVersion(src, version)
	if err != nil {
		return err
	}
	tmp := o.Script + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, o.Script)
}
