package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/serveproc"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

// outboundProc is one outbound under test, driven through its control API
// as an orchestrator would. By default it is `outbound serve` as a child
// process: its RSS is then the proxy's alone, and the load generator's
// garbage is not collected on its time. With -cpuprofile it runs in this
// process instead, so that one profile covers it.
type outboundProc struct {
	Addr   string // proxy listener
	Admin  string // control API
	Script string // its own copy of the bench script, rewritten by the reload scenario
	pid    int
	exited <-chan struct{}
	stop   func()
	api    *client.Client
}

// Stop shuts the proxy down.
func (o *outboundProc) Stop() { o.stop() }

// RSS returns the current and peak resident set size of its process.
func (o *outboundProc) RSS() (cur, peak int64, err error) { return readRSS(o.pid) }

// CPUPID is the process whose CPU time is the proxy's: none when it runs
// inside the harness.
func (o *outboundProc) CPUPID() int {
	if o.pid == os.Getpid() {
		return 0
	}
	return o.pid
}

// files are what one outbound is started with, in its own directory.
type files struct{ script, env, upstreamCA, state, log string }

// prepare copies the bench script into dir; the token reaches the script
// through a dotenv file, as secrets do in production.
func prepare(dir, script string, up *Upstream) (files, error) {
	f := files{script: filepath.Join(dir, "inject.js"), env: filepath.Join(dir, ".dev.vars"),
		upstreamCA: filepath.Join(dir, "upstream-ca.pem"), state: filepath.Join(dir, "state"),
		log: filepath.Join(dir, "outbound.log")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, err
	}
	src, err := os.ReadFile(script)
	if err != nil {
		return f, fmt.Errorf("outbound: reading bench script: %w", err)
	}
	for name, b := range map[string][]byte{f.script: src, f.upstreamCA: up.CAPEM, f.env: []byte("BENCH_TOKEN=" + up.Token + "\n")} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			return f, err
		}
	}
	return f, nil
}

// connectTo maps the HTTPS name to the upstream: outbound intercepts
// CONNECT to port 443 only, and the upstream listens on an ephemeral port.
func connectTo(up *Upstream) string {
	_, port, _ := net.SplitHostPort(up.HTTPSAddr)
	return upstreamHost + ":443:127.0.0.1:" + port
}

// startOutbound runs bin as a child process with its files in dir.
func startOutbound(ctx context.Context, bin, dir, script, logLevel string, up *Upstream) (*outboundProc, error) {
	f, err := prepare(dir, script, up)
	if err != nil {
		return nil, err
	}
	p, err := serveproc.Start(ctx, serveproc.Options{Bin: bin, LogPath: f.log, Args: []string{
		"--script", f.script, "--env-file", f.env, "--state", f.state,
		"--allow-private", // the upstream is on loopback
		"--upstream-ca", f.upstreamCA,
		"--connect-to", connectTo(up),
		"--log-format", "json", "--log-level", logLevel,
	}})
	if err != nil {
		return nil, err
	}
	return &outboundProc{Script: f.script, Addr: p.Listen, Admin: p.Admin, pid: p.PID(), exited: p.Exited(),
		stop: func() { p.Stop() }, api: p.API}, nil
}

// startOutboundInProcess runs the same server inside the harness.
func startOutboundInProcess(ctx context.Context, dir, script, logLevel string, up *Upstream) (*outboundProc, error) {
	f, err := prepare(dir, script, up)
	if err != nil {
		return nil, err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(logLevel)); err != nil {
		return nil, fmt.Errorf("bad -outbound-log-level %q", logLevel)
	}
	logf, err := os.Create(f.log)
	if err != nil {
		return nil, err
	}
	srv, err := app.New(ctx, app.Config{
		Script: f.script, EnvFile: f.env, Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", StateDir: f.state,
		AllowPrivate: true, UpstreamCA: []string{f.upstreamCA}, ConnectTo: []string{connectTo(up)},
		Logger: slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: lv})),
	})
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("outbound in-process: %w", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer logf.Close()
		srv.Serve(sctx)
	}()
	o := &outboundProc{Script: f.script, Addr: srv.ProxyAddr().String(), Admin: srv.AdminAddr().String(),
		pid: os.Getpid(), exited: done, stop: func() { cancel(); <-done }}
	o.api = client.New("http://"+o.Admin, "")
	if err := serveproc.WaitReady(ctx, o.api, o.exited, 30*time.Second); err != nil {
		o.Stop()
		return nil, err
	}
	return o, nil
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
	created, err := serveproc.CreateInstances(ctx, o.api, prefix, n)
	if err != nil {
		return nil, fmt.Errorf("outbound: %w", err)
	}
	urls := make([]*url.URL, n)
	for i, c := range created {
		if urls[i], err = url.Parse(c.ProxyURL); err != nil {
			return nil, fmt.Errorf("outbound: instance %s: bad proxy_url: %w", c.ID, err)
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
