package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/engine/reload"
	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/handlers/policy"
	"github.com/outbound-dev/outbound/internal/events"
	"github.com/outbound-dev/outbound/internal/host"
	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/internal/store/bolt"
	"github.com/outbound-dev/outbound/internal/store/redis"
	"github.com/outbound-dev/outbound/jsapi"
	"github.com/outbound-dev/outbound/proxy"
	"github.com/outbound-dev/outbound/proxy/authlimit"
	"github.com/outbound-dev/outbound/proxy/ca"
	"github.com/outbound-dev/outbound/proxy/control"
	"github.com/outbound-dev/outbound/proxy/control/ui"
	"github.com/outbound-dev/outbound/proxy/har"
	"github.com/outbound-dev/outbound/proxy/netguard"
	"github.com/outbound-dev/outbound/proxy/upstream"
)

// App is one running outbound: proxy listener, control API and the
// machinery behind them.
type App struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	reloader *reload.Reloader
	registry *instances.Registry
	svc      *policy.Service
	cas      *ca.Registry
	har      *har.Store
	up       *upstream.Transport
	proxy    *proxy.Server
	admin    *http.Server
	proxyLn  net.Listener
	adminLn  net.Listener
	transLn  net.Listener // serve --transparent, or nil
	metrics  *metrics
	events   *events.Hub
	// advertise is the proxy address in proxy_url and the home recorded
	// for the instances served here.
	advertise string
	// remoteHook, if set, is called with the id of each instance changed
	// by another replica once the change is applied here.
	remoteHook atomic.Pointer[func(id string)]

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// New opens the state, loads the script and binds both listeners. The
// caller runs Serve, or Close to give everything back.
func New(ctx context.Context, cfg Config) (s *App, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	red := &redactor{}
	startVars := func() *jsapi.Env { return &jsapi.Env{Vars: cfg.Vars} }
	red.env.Store(&startVars)
	hub := events.New(events.Options{Redact: red.redact})
	cfg.Logger = slog.New(consoleTap{next: redactHandler{next: cfg.Logger.Handler(), r: red}, hub: hub})
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:3128"
	}
	if cfg.Admin == "" {
		cfg.Admin = "127.0.0.1:3129"
	}
	// The proxy fills in its own defaults; the admin listener shares them.
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = proxy.DefaultReadHeaderTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = proxy.DefaultIdleTimeout
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = proxy.DefaultMaxHeaderBytes
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.StateDir == "" && StoreInStateDir(cfg.Store) {
		return nil, errors.New("no state directory given")
	}
	s = &App{cfg: cfg, log: cfg.Logger, cas: nil, har: har.NewStore(0), events: hub}
	built := s // a failing return sets s to nil before this runs
	defer func() {
		if err != nil {
			built.Close()
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pm, err := proxy.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	if s.metrics, err = newMetrics(reg, hub, s.storeHealth); err != nil {
		return nil, err
	}

	guard, up, err := newUpstream(cfg, pm)
	if err != nil {
		return nil, err
	}
	s.up = up
	s.cas = ca.NewRegistry(ca.Options{OnLeafLookup: pm.LeafLookup, Validity: cfg.CAValidity})
	if err := reg.Register(caExpiry{s.cas}); err != nil {
		return nil, err
	}

	// What most often fails comes first, before anything logs: a port in
	// use, a state dir that is not one or that another outbound holds.
	if s.proxyLn, err = listen(cfg.Listen, "the proxy"); err != nil {
		return nil, err
	}
	if s.adminLn, err = listen(cfg.Admin, "the control API"); err != nil {
		return nil, err
	}
	if ap, perr := netip.ParseAddrPort(s.adminLn.Addr().String()); perr == nil {
		guard.AddSelf(ap)
	}
	if err := s.listenTransparent(ctx, guard); err != nil {
		return nil, err
	}
	if s.store, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	kv := map[string]store.KV{}
	for _, name := range cfg.KV {
		kv[name] = s.store.KV(name)
	}

	envFile := cfg.EnvFile
	if envFile == "" {
		if def := filepath.Join(filepath.Dir(cfg.Script), ".dev.vars"); fileExists(def) {
			envFile = def
		}
	}
	s.reloader, err = reload.New(ctx, reload.Options{
		Path: cfg.Script,
		Pool: engine.PoolOptions{Size: cfg.Isolates, MaxWaiting: cfg.HandlerQueue, Timeout: cfg.HandlerTimeout,
			Fetch: up, Logger: cfg.Logger, MaxBodyBytes: cfg.MaxBodyBytes},
		Compile: policy.CompilePolicy,
		EnvFile: envFile,
		Vars:    cfg.Vars,
		KV:      kv,
		Logger:  cfg.Logger,
		OnLoad: func(gen int, err error) {
			s.metrics.scriptLoaded(gen, err)
			hub.Reload(gen, err)
			if err == nil { // a new script may block what open tunnels carry
				s.policyChanged("")
			}
		},
	})
	if err != nil {
		return nil, err
	}
	envNow := s.reloader.Env
	red.env.Store(&envNow)

	if s.advertise, err = advertise(cfg.Advertise, s.proxyLn.Addr()); err != nil {
		return nil, err
	}
	shared, isShared := s.store.(store.Shared)
	if isShared {
		if cfg.Advertise == "" {
			s.log.Warn("fleet: no --advertise given: proxy_url and the instances' home name the proxy listener, which must be an address the sandboxes and the other replicas reach, and the same after a restart", "advertise", s.advertise)
		}
		// Before taking over stored instances: two live replicas must not
		// both serve one home.
		if err := shared.ClaimHome(ctx, s.advertise); err != nil {
			return nil, err
		}
	}
	scripts := policy.FromReloader(s.reloader)
	s.registry, err = instances.Open(ctx, instances.Options{
		Store: s.store, Policy: policy.PolicyOf(scripts), Home: s.advertise, Shared: isShared, Logger: cfg.Logger,
		// CAs are not persisted: instances this replica takes over at
		// start get a fresh one, as created ones do.
		NewCA: func(id string) ([]byte, error) {
			a, err := s.cas.Add(id)
			if err != nil {
				return nil, err
			}
			return a.CertPEM(), nil
		},
		Gone:     s.instanceGone,
		OnRemote: s.remoteApplied,
		OnChange: s.policyChanged,
	})
	if err != nil {
		return nil, err
	}
	s.svc, err = policy.New(policy.Options{
		Scripts: scripts, Registry: s.registry, Env: s.reloader.Env, Upstream: up, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	s.proxy, err = proxy.New(proxy.Options{
		Backend: backend{svc: s.svc, reg: s.registry}, CAs: s.cas, Dial: up.DialContext, Guard: guard,
		Logger: cfg.Logger, Metrics: pm, HAR: s.har, Events: hub,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout, IdleTimeout: cfg.IdleTimeout, MaxHeaderBytes: cfg.MaxHeaderBytes,
		MaxConns: cfg.MaxConns, MaxTunnels: cfg.MaxTunnels,
		AuthFailRate: cfg.AuthFailRate, AuthFailBurst: cfg.AuthFailBurst,
		InterceptPostQuantum: cfg.InterceptPostQuantum,
	})
	if err != nil {
		return nil, err
	}
	s.admin = &http.Server{
		Handler: control.Handler(control.Options{
			Backend: &controlBackend{s}, Token: cfg.AdminToken, Logger: cfg.Logger,
			Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
			Events:  hub, UI: ui.Handler(),
			AuthLimit: authlimit.New(authlimit.Options{
				Rate: cfg.AuthFailRate, Burst: cfg.AuthFailBurst, Logger: cfg.Logger, What: "admin token",
			}),
		}),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       time.Minute,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	// Event streams never go idle: end them, or Shutdown waits them out.
	s.admin.RegisterOnShutdown(hub.Close)
	// Everything a remote change may touch exists now.
	s.registry.Start()
	return s, nil
}

// listen binds addr for what ("the proxy"). Its error reads as
// "listen 127.0.0.1:3128 for the proxy: address already in use".
func listen(addr, what string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var se *os.SyscallError
		if errors.As(err, &se) {
			err = se.Err
		}
		return nil, fmt.Errorf("listen %s for %s: %w", addr, what, err)
	}
	return ln, nil
}

// storeKind is what a --store value names.
type storeKind int

const (
	storeBad      storeKind = iota
	storeStateDir           // "" or "bolt:": the database in StateDir
	storeBoltFile           // bolt:PATH
	storeRedis              // redis://… or rediss://…
)

// parseStore is the one reading of a --store value's form.
func parseStore(v string) (storeKind, string) {
	switch {
	case v == "" || v == "bolt:":
		return storeStateDir, ""
	case strings.HasPrefix(v, "bolt:"):
		return storeBoltFile, strings.TrimPrefix(v, "bolt:")
	case strings.HasPrefix(v, "redis://") || strings.HasPrefix(v, "rediss://"):
		return storeRedis, v
	}
	return storeBad, ""
}

func badStore(v string) error {
	return fmt.Errorf("bad --store %q: want bolt:PATH, redis://[USER:PASS@]HOST:PORT/DB or rediss://…", redactURL(v))
}

// CheckStore checks the form of a --store value, so that a typo is refused
// before anything starts. Its error never shows a password.
func CheckStore(v string) error {
	switch kind, _ := parseStore(v); kind {
	case storeBad:
		return badStore(v)
	case storeRedis:
		_, _, err := redis.ParseURL(v)
		return err
	}
	return nil
}

// StoreInStateDir reports whether the store v names is the default one,
// which lives in the state directory.
func StoreInStateDir(v string) bool {
	kind, _ := parseStore(v)
	return kind == storeStateDir
}

// StoreName names the store of cfg for a log, without credentials.
func StoreName(cfg Config) string {
	switch kind, _ := parseStore(cfg.Store); kind {
	case storeStateDir:
		return "bolt:" + filepath.Join(cfg.StateDir, bolt.File)
	case storeBoltFile:
		return cfg.Store
	}
	if _, addr, err := redis.ParseURL(cfg.Store); err == nil {
		return addr
	}
	return "redis"
}

// openStore opens the store named by cfg.Store.
func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	switch kind, v := parseStore(cfg.Store); kind {
	case storeStateDir:
		return opened(bolt.Open(cfg.StateDir))
	case storeBoltFile:
		return opened(bolt.OpenFile(v))
	case storeRedis:
		return opened(redis.Open(ctx, redis.Options{URL: v, Logger: cfg.Logger}))
	}
	return nil, badStore(cfg.Store)
}

// opened returns a nil interface, not a typed nil, when opening failed.
func opened[S store.Store](s S, err error) (store.Store, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

// redactURL hides a password in a URL-looking flag value.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		return u.Redacted()
	}
	if strings.Contains(raw, "@") {
		return "(a value with credentials)"
	}
	return raw
}

// advertise checks --advertise, or takes the proxy listener's address.
func advertise(flag string, ln net.Addr) (string, error) {
	if flag == "" {
		return ln.String(), nil
	}
	return flag, CheckAdvertise(flag)
}

// CheckAdvertise checks the form of an --advertise value: HOST:PORT with
// a valid host (it goes into proxy_url) and a port that is not 0.
func CheckAdvertise(v string) error {
	h, port, err := net.SplitHostPort(v)
	if err == nil {
		_, err = host.Normalize(h)
	}
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
		return fmt.Errorf("bad --advertise %q: want HOST:PORT, the proxy address sandboxes and other replicas reach", v)
	}
	return nil
}

// instanceGone drops what this replica held for an instance it no longer
// serves: the CA key, the trace and open connections.
func (s *App) instanceGone(id string) {
	s.cas.Remove(id)
	s.har.Remove(id)
	if s.proxy != nil {
		s.proxy.CloseInstance(id)
	}
}

// remoteApplied counts a change made on another replica once it is
// applied here; tests and benchmarks watch it through remoteHook.
func (s *App) remoteApplied(id string) {
	s.metrics.remoteChanges.Inc()
	if h := s.remoteHook.Load(); h != nil {
		(*h)(id)
	}
}

// policyChanged decides the open opaque tunnels of instance id ("" for
// every instance) again, after a change of its policy: a runtime method or
// another replica's write (the registry's OnChange), or a reloaded script
// (OnLoad). Whatever path changes policy ends here. Only the first load,
// inside reload.New, comes before the proxy exists; every later caller
// starts after New returns.
func (s *App) policyChanged(id string) {
	if s.proxy != nil {
		s.proxy.Redecide(context.Background(), id)
	}
}

// storeHealth is the store's health; the embedded store is always up.
func (s *App) storeHealth() store.Health {
	if sh, ok := s.store.(store.Shared); ok {
		return sh.Health()
	}
	return store.Health{Backend: "bolt", Up: true}
}

// Advertise is the proxy address in proxy_url: this replica's home.
func (s *App) Advertise() string { return s.advertise }

// newUpstream builds the guard and the shared upstream transport. A
// --resolve or --connect-to mapping to an IP address opts in that mapping's
// own dial only (see package upstream): the address is not opened to any
// other name, literal or port.
func newUpstream(cfg Config, pm *proxy.Metrics) (*netguard.Guard, *upstream.Transport, error) {
	var resolve, connectTo []upstream.Override
	for _, r := range cfg.Resolve {
		o, err := upstream.ParseResolve(r)
		if err != nil {
			return nil, nil, err
		}
		resolve = append(resolve, o)
	}
	for _, r := range cfg.ConnectTo {
		o, err := upstream.ParseConnectTo(r)
		if err != nil {
			return nil, nil, err
		}
		connectTo = append(connectTo, o)
	}
	guard := netguard.New(netguard.Options{AllowPrivate: cfg.AllowPrivate, Allow: cfg.AllowNets})
	var pems [][]byte
	for _, f := range cfg.UpstreamCA {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("--upstream-ca: %w", err)
		}
		pems = append(pems, b)
	}
	var roots *x509.CertPool
	if len(pems) > 0 {
		var err error
		if roots, err = upstream.Roots(pems...); err != nil {
			return nil, nil, fmt.Errorf("--upstream-ca: %w", err)
		}
	}
	up, err := upstream.New(upstream.Options{
		Guard: guard, RootCAs: roots, Resolve: resolve, ConnectTo: connectTo, OnError: pm.UpstreamError,
		ResponseHeaderTimeout: cfg.UpstreamResponseHeaderTimeout,
	})
	if err != nil {
		return nil, nil, err
	}
	return guard, up, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// ProxyAddr is the proxy listener's address.
func (s *App) ProxyAddr() net.Addr { return s.proxyLn.Addr() }

// AdminAddr is the control API listener's address.
func (s *App) AdminAddr() net.Addr { return s.adminLn.Addr() }

// Reload reloads the script and env file now.
func (s *App) Reload(ctx context.Context) error { return s.reloader.Reload(ctx) }

// Serve serves both listeners and watches the script until ctx is done, then
// shuts down: it drains for Config.ShutdownGrace, then closes whatever is
// still open. A shutdown that had to cut connections is logged, not an
// error.
func (s *App) Serve(ctx context.Context) error {
	errc := make(chan error, 4)
	go func() { errc <- s.proxy.Serve(s.proxyLn) }()
	go func() { errc <- s.admin.Serve(s.adminLn) }()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() { errc <- s.reloader.Run(watchCtx) }()
	// Not ctx: transparent connections drain with the proxy's, and are cut
	// only after its grace period.
	transCtx, cutTrans := context.WithCancel(context.WithoutCancel(ctx))
	defer cutTrans()
	transDone := s.serveTransparent(transCtx, errc)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		// A listener closed by Close is a stop, not a failure.
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, context.Canceled) || s.closed.Load() {
			err = nil
		}
	}
	stopWatch()
	if s.transLn != nil {
		s.transLn.Close() // stops accepting; open connections drain
	}
	s.shutdown()
	cutTrans()
	<-transDone
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// shutdown drains both listeners at once for the grace period, then cuts
// what is left.
func (s *App) shutdown() {
	grace := s.cfg.ShutdownGrace
	s.log.Info("shutting down: draining requests, streams and tunnels", "grace", grace.String())
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	adminDone := make(chan struct{})
	go func() {
		defer close(adminDone)
		if err := s.admin.Shutdown(ctx); err != nil {
			s.log.Warn("control API shutdown: grace period over; closing its connections", "error", err.Error())
			s.admin.Close()
		}
	}()
	if err := s.proxy.Shutdown(ctx); err != nil {
		s.log.Warn("proxy shutdown", "error", err.Error())
	}
	<-adminDone
}

// handlerStopWait bounds how long Close waits for handlers that are still
// running once their clients are gone.
const handlerStopWait = 5 * time.Second

// Close releases everything without waiting for connections.
func (s *App) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.events.Close()
		var errs []error
		if s.proxyLn != nil {
			s.proxyLn.Close()
		}
		if s.adminLn != nil {
			s.adminLn.Close()
		}
		if s.transLn != nil {
			s.transLn.Close()
		}
		if s.reloader != nil {
			// Closing the script waits for every handler still running. The
			// proxy has cut their clients already; a handler that ignores
			// that is ended by its own timeout, which shutdown need not wait
			// for.
			done := make(chan error, 1)
			go func() { done <- s.reloader.Close() }()
			select {
			case err := <-done:
				errs = append(errs, err)
			case <-time.After(handlerStopWait):
				s.log.Warn("handlers still running after shutdown; not waiting for them", "waited", handlerStopWait.String())
			}
		}
		if s.up != nil {
			s.up.CloseIdleConnections()
		}
		if s.registry != nil {
			s.registry.Close()
		}
		if s.store != nil {
			errs = append(errs, s.store.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
