package proxy

// Re-deciding open tunnels: an opaque tunnel (raw CONNECT, 443 without
// interception, or a captured stream that is not intercepted) is decided
// once, when it opens. When the policy changes, the caller asks for the
// tunnels to be decided again, through the same Backend call that decided
// it (Connect, or Raw for a captured stream); those the policy no longer
// lets through are cut.
// Intercepted tunnels need none of this: each request inside is decided.

import (
	"context"

	"github.com/outbound-dev/outbound/internal/decision"
)

// Redecide decides every open opaque tunnel of the instance with id again
// ("" means every instance), and cuts those the Backend would now refuse or
// would now intercept (an opaque tunnel would bypass the handlers the new
// policy runs). It returns how many it cut; each is logged and counted in
// outbound_tunnels_cut_total. Call it after every change of an instance's
// policy (runtime overrides, a reloaded script).
func (s *Server) Redecide(ctx context.Context, id string) int {
	// Bumped before looking: a tunnel decided before this call but not yet
	// tracked sees the bump and re-decides itself (see opened).
	s.policyEpoch.Add(1)
	s.mu.Lock()
	var open []*relay
	for t := range s.relays {
		if t.decide != nil && (id == "" || t.inst.ID() == id) {
			open = append(open, t)
		}
	}
	s.mu.Unlock()

	cut := 0
	for _, t := range open {
		if s.redecide(ctx, t) {
			cut++
		}
	}
	return cut
}

// decideAgain returns decide's answer now, and true, if the policy changed
// since *epoch, which it moves to the epoch of that answer. A raw tunnel is
// checked so just before it is dialled (nothing the policy now refuses is
// dialled) and once tracked (Redecide may have looked before).
func (s *Server) decideAgain(ctx context.Context, decide func(context.Context) decision.Connect, epoch *uint64) (decision.Connect, bool) {
	now := s.policyEpoch.Load()
	if now == *epoch {
		return decision.Connect{}, false
	}
	*epoch = now
	return decide(ctx), true
}

// opened is called once a raw tunnel is tracked: if the policy changed
// since it was decided, Redecide may have missed it. It reports whether t
// is still open (neither this nor anything else cut it).
func (s *Server) opened(ctx context.Context, t *relay) bool {
	if dec, again := s.decideAgain(ctx, t.decide, &t.epoch); again {
		s.cutRefused(t, dec)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !t.cutDone
}

// redecide asks the Backend about t again and cuts it if the answer is no
// longer an opaque tunnel. It reports whether it cut t.
func (s *Server) redecide(ctx context.Context, t *relay) bool {
	return s.cutRefused(t, t.decide(ctx))
}

// cutRefused cuts t if dec, its new decision, is no longer an opaque
// tunnel. It reports whether it cut t.
func (s *Server) cutRefused(t *relay, dec decision.Connect) bool {
	reason := ""
	switch {
	case !dec.Allow:
		reason = "blocked"
	case dec.Intercept:
		reason = "intercepted"
	default:
		return false
	}
	s.mu.Lock()
	_, still := s.relays[t]
	// Once per tunnel: it stays tracked until its copy loop ends, and
	// two policy changes in a row must not count it twice.
	first := still && !t.revoked
	if first {
		t.revoked = true
		// Counted before the cut, so whoever sees the tunnel end also sees
		// it counted.
		s.opts.Metrics.tunnelCut(reason)
		t.cut()
	}
	s.mu.Unlock()
	if !first {
		return false
	}
	s.log.Info("tunnel closed: the instance's policy changed", "instance", t.inst.ID(), "class", t.inst.Class(),
		"host", t.host, "port", t.port, "now", reason, "step", dec.Step)
	return true
}
