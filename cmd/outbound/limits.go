package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/jsapi"
	"github.com/outbound-dev/outbound/proxy"
	"github.com/outbound-dev/outbound/proxy/authlimit"
	"github.com/outbound-dev/outbound/proxy/ca"
	"github.com/outbound-dev/outbound/proxy/upstream"
)

// limitFlags are serve's limits on what clients may hold or send, on
// handlers and shutdown, and the CA's lifetime. Each starts at its real
// default, so --help shows it.
type limitFlags struct {
	readHeaderTimeout, idleTimeout, upstreamHeaderTimeout time.Duration
	handlerTimeout, shutdownGrace                         time.Duration
	maxHeaderBytes, maxBodyBytes                          byteSize
	maxConns, maxTunnels, authFailBurst                   int
	isolates, handlerQueue                                int
	authFailRate                                          rate
	caValidity                                            time.Duration
	interceptPostQuantum                                  bool
}

// minCAValidity keeps a CA's leaves cacheable: a leaf is re-minted in the
// last hour of its (and so its CA's) life.
const minCAValidity = 2 * time.Hour

func (f *limitFlags) register(fs *flag.FlagSet) {
	f.readHeaderTimeout, f.idleTimeout = proxy.DefaultReadHeaderTimeout, proxy.DefaultIdleTimeout
	f.upstreamHeaderTimeout = upstream.DefaultResponseHeaderTimeout
	f.maxHeaderBytes, f.maxBodyBytes = proxy.DefaultMaxHeaderBytes, jsapi.DefaultMaxBodyBytes
	f.maxConns, f.maxTunnels = proxy.DefaultMaxConns, proxy.DefaultMaxTunnels
	f.authFailRate, f.authFailBurst = authlimit.DefaultRate, authlimit.DefaultBurst
	f.caValidity = ca.DefaultValidity
	fs.DurationVar(&f.readHeaderTimeout, "read-header-timeout", f.readHeaderTimeout, "proxy and admin: how long (`DUR`) a client may take to send a request's headers (slowloris)")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", f.idleTimeout, "proxy and admin: how long (`DUR`) a keep-alive connection may sit idle")
	fs.Var(&f.maxHeaderBytes, "max-header-bytes", "proxy and admin: largest request header block, a `SIZE` such as 64KiB; larger gets 431")
	fs.IntVar(&f.maxConns, "max-conns", f.maxConns, "at most `N` proxy client connections open at once, idle ones and tunnels included; more get 503 at accept")
	fs.IntVar(&f.maxTunnels, "max-tunnels", f.maxTunnels, "at most `N` CONNECT tunnels open at once; more get 503")
	fs.Var(&f.maxBodyBytes, "max-body-bytes", "most a handler may read of one body with text(), json() or arrayBuffer(), a `SIZE` such as 32MiB")
	fs.DurationVar(&f.upstreamHeaderTimeout, "upstream-header-timeout", f.upstreamHeaderTimeout, "how long (`DUR`) an upstream may take to answer with headers; then 504")
	fs.Var(&f.authFailRate, "auth-fail-rate", "failed authentications forgiven per second per source address, after --auth-fail-burst in a row; past that 429 (`RATE`, or off)")
	fs.IntVar(&f.authFailBurst, "auth-fail-burst", f.authFailBurst, "`N` failed authentications a source address may make in a row before --auth-fail-rate applies")
	fs.DurationVar(&f.caValidity, "ca-validity", f.caValidity, "lifetime (`DUR`, at least 2h) of each instance CA from its creation or a restart; a CA is never rotated: recreate the instance before it ends")
	fs.DurationVar(&f.handlerTimeout, "handler-timeout", engine.DefaultTimeout, "wall-clock limit for one handler invocation, waiting for a runtime included (then 504)")
	fs.IntVar(&f.isolates, "isolates", engine.DefaultSize(), "JS runtimes running handlers; each serves many requests at once while they await I/O or timers")
	fs.IntVar(&f.handlerQueue, "handler-queue", engine.DefaultMaxWaiting, "requests of one instance that may wait for a runtime; more get 503 at once")
	fs.DurationVar(&f.shutdownGrace, "shutdown-grace", app.DefaultShutdownGrace, "on SIGINT or SIGTERM, how long open requests, streams and tunnels may finish before they are closed")
	fs.BoolVar(&f.interceptPostQuantum, "intercept-post-quantum", false, "offer the X25519MLKEM768 key exchange on the sandbox-facing TLS leg (costs a third more per interception handshake)")
}

// apply validates the limits into c.
func (f *limitFlags) apply(c *app.Config) error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"handler-timeout", f.handlerTimeout}, {"read-header-timeout", f.readHeaderTimeout}, {"idle-timeout", f.idleTimeout},
		{"upstream-header-timeout", f.upstreamHeaderTimeout}, {"shutdown-grace", f.shutdownGrace}} {
		if d.v <= 0 {
			return fmt.Errorf("bad --%s %s: must be positive", d.name, d.v)
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"max-conns", f.maxConns}, {"max-tunnels", f.maxTunnels}, {"auth-fail-burst", f.authFailBurst},
		{"isolates", f.isolates}, {"handler-queue", f.handlerQueue}} {
		if n.v <= 0 {
			return fmt.Errorf("bad --%s %d: must be at least 1", n.name, n.v)
		}
	}
	if f.caValidity < minCAValidity {
		return fmt.Errorf("bad --ca-validity %s: must be at least %s", f.caValidity, minCAValidity)
	}
	c.ReadHeaderTimeout, c.IdleTimeout = f.readHeaderTimeout, f.idleTimeout
	c.UpstreamResponseHeaderTimeout = f.upstreamHeaderTimeout
	c.MaxHeaderBytes, c.MaxBodyBytes = int(f.maxHeaderBytes), int64(f.maxBodyBytes)
	c.MaxConns, c.MaxTunnels = f.maxConns, f.maxTunnels
	c.AuthFailRate, c.AuthFailBurst = float64(f.authFailRate), f.authFailBurst
	c.CAValidity = f.caValidity
	c.InterceptPostQuantum = f.interceptPostQuantum
	c.HandlerTimeout, c.ShutdownGrace = f.handlerTimeout, f.shutdownGrace
	c.Isolates, c.HandlerQueue = f.isolates, f.handlerQueue
	return nil
}

// byteSize is a positive size flag: 33554432, 32MiB, 64KiB or 1.5 GB.
type byteSize int

// maxByteSize keeps a size within int on every platform outbound builds for.
const maxByteSize = math.MaxInt32

func parseByteSize(s string) (byteSize, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("want a size such as 65536, 64KiB or 32MiB")
	}
	if n == 0 || n > maxByteSize {
		return 0, fmt.Errorf("must be between 1 byte and 2GiB")
	}
	return byteSize(n), nil
}

func (b *byteSize) Set(s string) error {
	v, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// String is exact: binary units only where they divide the size.
func (b *byteSize) String() string {
	n := int64(*b)
	switch {
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

// rate is a positive number per second, or "off" (stored as -1, which
// turns the limiter off).
type rate float64

func parseRate(s string) (rate, error) {
	if s == "off" {
		return -1, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
		return 0, errors.New("want a positive number per second, or off")
	}
	return rate(v), nil
}

func (r *rate) Set(s string) error {
	v, err := parseRate(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

func (r *rate) String() string {
	if *r < 0 {
		return "off"
	}
	return strconv.FormatFloat(float64(*r), 'g', -1, 64)
}
