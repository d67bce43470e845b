// Package server assembles outbound: the script generations, the policy
// service, the proxy listener and the control API, with their shared
// upstream transport, store and metrics. The CLI only parses flags into a
// Config; tests start the same Server.
package server

import (
	"log/slog"
	"net/netip"
	"time"
)

// Config is everything `outbound serve` takes.
type Config struct {
	Script         string
	Listen         string // proxy listener, default 127.0.0.1:3128
	Admin          string // control API listener, default 127.0.0.1:3129
	AdminToken     string
	EnvFile        string            // "" means .dev.vars beside the script, if present
	Vars           map[string]string // --var
	KV             []string          // KV binding names
	StateDir       string
	AllowPrivate   bool
	AllowNets      []netip.Prefix
	Resolve        []string // HOST:PORT:ADDR
	ConnectTo      []string // HOST:PORT:ADDR:PORT2
	UpstreamCA     []string // PEM files
	HandlerTimeout time.Duration
	Logger         *slog.Logger
}
