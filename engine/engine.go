// Package engine owns the policy script: bundling TS/JS with esbuild,
// compiling it once, extracting each class's static config, the pool of goja
// isolates that run handlers, and script generations with hot reload. It
// knows nothing of policy order or sockets.
package engine

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/outbound-dev/outbound/jsapi"
)

// ClassConfig is one class's static configuration, read once at load so the
// policy chain never enters JS to decide.
type ClassConfig struct {
	Name           string
	EnableInternet bool     // default true
	InterceptHTTPS bool     // default false
	AllowedHosts   []string // nil when the class does not set it
	DeniedHosts    []string // nil when the class does not set it
	ByHostKeys     []string // outboundByHost keys, in insertion order
	Handlers       []string // outboundHandlers names, sorted
	HasOutbound    bool     // a static outbound (or outboundProxy) exists
}

// ScriptInfo describes one loaded script.
type ScriptInfo struct {
	Path       string
	Classes    []ClassConfig // in definition order
	HasBlocked bool          // the module exports blocked(request, env, ctx)
	Inputs     []string      // absolute paths of every file in the bundle
}

// Class returns the named class, or nil.
func (s *ScriptInfo) Class(name string) *ClassConfig {
	for i := range s.Classes {
		if s.Classes[i].Name == name {
			return &s.Classes[i]
		}
	}
	return nil
}

// HandlerKind says which of a class's handlers a call runs.
type HandlerKind uint8

const (
	Outbound HandlerKind = iota // the static catch-all
	ByHost                      // outboundByHost[Key]
	Named                       // outboundHandlers[Key], picked at runtime
	Blocked                     // the module's blocked export
)

// HandlerRef names one handler of a class.
type HandlerRef struct {
	Kind HandlerKind
	Key  string // outboundByHost key or outboundHandlers name
}

// Call is one handler invocation.
type Call struct {
	Class      string
	Handler    HandlerRef
	Request    *http.Request // absolute URL; the body streams
	Env        *jsapi.Env
	InstanceID string
	// Params is the JSON of the params given at runtime. Only Named
	// handlers get ctx.params; nil means undefined.
	Params json.RawMessage
	Reason string       // ctx.reason for Blocked: denied, not_allowed, default_deny
	Logger *slog.Logger // console.* goes here; nil means the pool's logger
}
