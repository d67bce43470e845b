// Package app assembles outbound: the script generations, the policy
// service, the proxy listener and the control API, with their shared
// upstream transport, store and metrics. The CLI only parses flags into a
// Config; tests start the same App.
package app

import (
	"log/slog"
	"net/netip"
	"time"
)

// DefaultShutdownGrace is Config.ShutdownGrace's default.
const DefaultShutdownGrace = 10 * time.Second

// Config is everything `outbound serve` takes.
type Config struct {
	Script      string
	Listen      string // proxy listener, default 127.0.0.1:3128
	Admin       string // control API listener, default 127.0.0.1:3129
	Transparent string // serve --transparent: listener for redirected connections (Linux); "" for none
	AdminToken  string
	EnvFile     string            // "" means .dev.vars beside the script, if present
	Vars        map[string]string // --var
	KV          []string          // KV binding names
	StateDir    string            // for the default store
	// Store is where instances, overrides and KV live: "bolt:PATH" (a
	// database file), "redis://…" or "rediss://…" (a store shared by a
	// fleet). "" means bolt:StateDir/outbound.db.
	Store string
	// Advertise is the proxy address (HOST:PORT) written into proxy_url
	// and recorded as the home of the instances this replica serves. ""
	// means the proxy listener's address.
	Advertise      string
	AllowPrivate   bool
	AllowNets      []netip.Prefix
	Resolve        []string // HOST:PORT:ADDR
	ConnectTo      []string // HOST:PORT:ADDR:PORT2
	UpstreamCA     []string // PEM files
	HandlerTimeout time.Duration
	Logger         *slog.Logger
	// Isolates is the number of JS runtimes (0: engine.DefaultSize), and
	// HandlerQueue how many of one instance's requests may wait for one (0:
	// engine.DefaultMaxWaiting).
	Isolates, HandlerQueue int
	// ShutdownGrace is how long Serve lets requests, streams and tunnels
	// finish once its context is done, before it closes them; 10s.
	ShutdownGrace time.Duration

	// Limits on what clients may hold or send. Zero means the default noted.
	ReadHeaderTimeout time.Duration // proxy and admin: to send a request's headers; 10s
	IdleTimeout       time.Duration // proxy and admin: keep-alive idle; 2m
	MaxHeaderBytes    int           // proxy and admin: one header block; 64 KiB
	MaxConns          int           // proxy client connections open at once, idle ones included; 16384; more get 503
	MaxTunnels        int           // CONNECT tunnels open at once; 4096; more get 503
	MaxBodyBytes      int64         // what JS may read of one body; 32 MiB
	// UpstreamResponseHeaderTimeout is how long an upstream may take to
	// answer with headers before the request gets 504; 120s.
	UpstreamResponseHeaderTimeout time.Duration
	// Failed authentications (proxy credentials, admin token) per source
	// address: AuthFailBurst in a row (20), then one per second
	// (AuthFailRate) is forgiven; past that the source gets 429. A negative
	// AuthFailRate disables the limit.
	AuthFailRate  float64
	AuthFailBurst int

	// CAValidity is how long an instance CA lives from its creation (or
	// from a restart, which gives every instance a new CA); 30 days. CAs
	// are never rotated: see proxy/ca.
	CAValidity time.Duration
	// InterceptPostQuantum offers the X25519MLKEM768 hybrid on the
	// sandbox-facing TLS leg (see proxy.Options).
	InterceptPostQuantum bool
}
