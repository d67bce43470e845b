package policy

import (
	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/engine/reload"
	"github.com/outbound-dev/outbound/handlers/chain"
)

// CompilePolicy is reload.Options.Compile: it compiles a generation's host
// patterns, so a bad pattern fails the load and the last good script stays.
func CompilePolicy(info *engine.ScriptInfo) (any, error) {
	return chain.CompileScript(info.Classes)
}

// FromReloader adapts a Reloader whose Options.Compile is CompilePolicy.
func FromReloader(r *reload.Reloader) Scripts { return reloaderScripts{r} }

type reloaderScripts struct{ r *reload.Reloader }

func (s reloaderScripts) Acquire() (*Script, func()) {
	g, release := s.r.Acquire()
	if g == nil {
		return nil, release
	}
	pol, ok := g.Policy.(*chain.ScriptPolicy)
	if !ok {
		release()
		return nil, func() {}
	}
	return &Script{Policy: pol, Invoker: g.Pool, Info: g.Info}, release
}

// PolicyOf returns the current compiled policy of s, for
// instances.Options.Policy. It is nil when no script is loaded.
func PolicyOf(s Scripts) func() *chain.ScriptPolicy {
	return func() *chain.ScriptPolicy {
		sc, release := s.Acquire()
		defer release()
		if sc == nil {
			return nil
		}
		return sc.Policy
	}
}
