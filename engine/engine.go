// Package engine owns running the policy script: bundling TS/JS with
// esbuild, compiling it once, reading each class's spec (chain.ClassSpec),
// and the pool of goja isolates that invoke handlers. Script generations and
// hot reload are engine/reload's. It knows nothing of policy order or
// sockets.
package engine

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/jsapi"
)

// ScriptInfo describes one loaded script.
type ScriptInfo struct {
	Path       string
	Classes    []chain.ClassSpec // in definition order
	HasBlocked bool              // the module exports blocked(request, env, ctx); see also ClassSpec.HasBlocked
	Inputs     []string          // absolute paths of every file in the bundle
}

// Class returns the named class, or nil.
func (s *ScriptInfo) Class(name string) *chain.ClassSpec {
	for i := range s.Classes {
		if s.Classes[i].Name == name {
			return &s.Classes[i]
		}
	}
	return nil
}

// Call is one handler invocation.
type Call struct {
	Class      string
	Handler    chain.HandlerRef
	Request    *http.Request // absolute URL; the body streams
	Env        *jsapi.Env
	InstanceID string
	// Params is the JSON of the params given at runtime. Only chain.HandlerNamed
	// handlers get ctx.params; nil means undefined.
	Params json.RawMessage
	Reason string       // ctx.reason for chain.HandlerBlocked: denied, not_allowed, default_deny
	Logger *slog.Logger // console.* goes here; nil means the pool's logger
}
