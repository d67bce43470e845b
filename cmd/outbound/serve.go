package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/proxy/control"
)

// serveFlags are the flags of `serve`, shared by `run`'s embedded mode.
type serveFlags struct {
	script, listen, admin, adminToken, envFile, state  string
	store, advertise                                   string
	vars, kv, allowNet, resolve, connectTo, upstreamCA listFlag
	allowPrivate                                       bool
	logFormat, logLevel                                string
	limits                                             limitFlags
}

func (f *serveFlags) register(fs *flag.FlagSet, listen, admin string) {
	fs.StringVar(&f.script, "script", "", "JS/TS policy module `PATH` (required)")
	fs.StringVar(&f.listen, "listen", listen, "proxy listener `ADDR`")
	fs.StringVar(&f.admin, "admin", admin, "control API listener `ADDR`; it also serves the live view at /ui/")
	fs.StringVar(&f.adminToken, "admin-token", os.Getenv("OUTBOUND_ADMIN_TOKEN"), "require this bearer `TOKEN` on the control API (also OUTBOUND_ADMIN_TOKEN)")
	fs.StringVar(&f.envFile, "env-file", "", "dotenv `PATH` of vars and secrets, watched (default .dev.vars beside the script, if present)")
	fs.Var(&f.vars, "var", "one var `KEY=VALUE` (repeatable)")
	fs.Var(&f.kv, "kv", "a KV namespace binding env.`NAME` (repeatable), persisted in the state dir")
	fs.StringVar(&f.state, "state", "", "`DIR` for runtime overrides and KV data (default $XDG_STATE_HOME/outbound, else ~/.local/state/outbound)")
	fs.StringVar(&f.store, "store", os.Getenv("OUTBOUND_STORE"), "where instances, overrides and KV live: bolt:PATH, or redis://[USER:PASS@]HOST:PORT/DB (rediss:// for TLS) shared by a fleet of replicas; also OUTBOUND_STORE, which keeps a password off the command line (default bolt: in --state)")
	fs.StringVar(&f.advertise, "advertise", "", "the proxy `HOST:PORT` written into proxy_url: how sandboxes and other replicas reach this one; keep it the same across restarts (default the proxy listener)")
	fs.BoolVar(&f.allowPrivate, "allow-private", false, "let upstream dials reach loopback, private and link-local addresses")
	fs.Var(&f.allowNet, "allow-net", "let upstream dials reach this `CIDR` (repeatable)")
	fs.Var(&f.resolve, "resolve", "dial ADDR for HOST:PORT, as in curl: `HOST:PORT:ADDR` (repeatable)")
	fs.Var(&f.connectTo, "connect-to", "dial ADDR:PORT2 for HOST:PORT; policy, SNI and certificate checks still use HOST: `HOST:PORT:ADDR:PORT2` (repeatable)")
	fs.Var(&f.upstreamCA, "upstream-ca", "extra PEM roots trusted for upstream TLS, a `PATH` (repeatable)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log `FORMAT`: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	f.limits.register(fs)
}

func defaultStateDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "outbound"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no --state given and no home directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "outbound"), nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("bad --log-format %q: want text or json", format)
}

// config validates the flags into a app.Config.
func (f *serveFlags) config(stderr io.Writer) (app.Config, error) {
	var c app.Config
	if f.script == "" {
		return c, fmt.Errorf("--script is required")
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return c, err
	}
	c = app.Config{
		Script: f.script, Listen: f.listen, Admin: f.admin, AdminToken: f.adminToken,
		EnvFile: f.envFile, Vars: map[string]string{}, KV: f.kv, StateDir: f.state, Store: f.store, Advertise: f.advertise,
		AllowPrivate: f.allowPrivate, Resolve: f.resolve, ConnectTo: f.connectTo,
		UpstreamCA: f.upstreamCA, Logger: log,
	}
	for _, kv := range f.vars {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return c, fmt.Errorf("bad --var %q: want KEY=VALUE", kv)
		case k == "":
			// The value may be a secret: name the flag, not its value.
			return c, fmt.Errorf(`bad --var "=…" (value not shown): the KEY before "=" is empty; want KEY=VALUE`)
		}
		c.Vars[k] = v
	}
	for _, n := range f.allowNet {
		// One at a time, so the error names this flag, not "source".
		p, err := control.ParseSources([]string{n})
		if err != nil {
			return c, fmt.Errorf("bad --allow-net %q: want a CIDR such as 10.0.0.0/8", n)
		}
		c.AllowNets = append(c.AllowNets, p...)
	}
	if err := f.limits.apply(&c); err != nil {
		return c, err
	}
	if err := app.CheckStore(f.store); err != nil {
		return c, err
	}
	if f.advertise != "" {
		if err := app.CheckAdvertise(f.advertise); err != nil {
			return c, err
		}
	}
	if c.StateDir == "" && app.StoreInStateDir(c.Store) {
		if c.StateDir, err = defaultStateDir(); err != nil {
			return c, err
		}
	}
	return c, nil
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	var f serveFlags
	fs := newFlags("serve", "serve --script PATH [flags]",
		"outbound serve --script examples/github-token.js --env-file .dev.vars --kv KEYS", stdout)
	f.register(fs, "127.0.0.1:3128", "127.0.0.1:3129")
	var transparentAddr string
	fs.StringVar(&transparentAddr, "transparent", "", "also accept connections a firewall redirected to `ADDR` (iptables/nftables REDIRECT or TPROXY; Linux): each is decided for the instance whose \"sources\" hold the client address")
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return fail(stderr, "serve", 2, "unexpected argument %q", fs.Arg(0))
	}
	cfg, err := f.config(stderr)
	if err != nil {
		return fail(stderr, "serve", 2, "%v", err)
	}
	cfg.Transparent = transparentAddr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := app.New(ctx, cfg)
	if err != nil {
		return fail(stderr, "serve", 1, "%v", err)
	}
	attrs := []any{"proxy", srv.ProxyAddr().String(), "admin", srv.AdminAddr().String(),
		"advertise", srv.Advertise(), "script", cfg.Script, "store", app.StoreName(cfg)}
	if a := srv.TransparentAddr(); a != nil {
		attrs = append(attrs, "transparent", a.String())
	}
	cfg.Logger.Info("outbound serving", attrs...)
	if err := srv.Serve(ctx); err != nil {
		return fail(stderr, "serve", 1, "%v", err)
	}
	cfg.Logger.Info("outbound stopped")
	return 0
}
