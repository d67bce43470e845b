package policy

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/internal/host"
)

// Errors of Explain that a caller branches on.
var (
	// ErrNoScript: no policy script is loaded, so nothing can be decided.
	ErrNoScript = errors.New("no policy script is loaded")
	// ErrBadURL: the URL is not an absolute http or https URL with a host.
	ErrBadURL = errors.New("bad URL")
)

// Explanation is how a request would be decided: the step of the chain
// (1-9), the handler that would run, and whether it is blocked and why.
type Explanation struct {
	Step int `json:"step"`
	// Handler is the handler that would run (a blocked request that the
	// script's blocked hook answers names "blocked"), or nil.
	Handler *string `json:"handler"`
	Blocked bool    `json:"blocked"`
	// Reason is the blocked hook's ctx.reason (denied, not_allowed or
	// default_deny) when Blocked, else nil.
	Reason *string `json:"reason"`
}

// Explain decides a request to rawURL for inst with the functions that
// decide live traffic, and runs no handler and dials nothing. As on the
// wire, an https URL is first a CONNECT to its host and port: only when the
// class intercepts it does the request inside go through the whole chain.
// An http URL is a proxied request.
func (s *Service) Explain(inst *instances.Instance, rawURL string) (Explanation, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return Explanation{}, fmt.Errorf("%w %q: %v", ErrBadURL, rawURL, unwrapURLError(err))
	}
	if !u.IsAbs() || u.Host == "" {
		return Explanation{}, fmt.Errorf("%w %q: want an absolute http:// or https:// URL", ErrBadURL, rawURL)
	}
	h, err := urlHost(u)
	if err != nil {
		return Explanation{}, fmt.Errorf("%w %q: %v", ErrBadURL, rawURL, err)
	}
	sc, release := s.opts.Scripts.Acquire()
	defer release()
	if sc == nil {
		return Explanation{}, ErrNoScript
	}
	if strings.EqualFold(u.Scheme, "https") {
		_, port, err := host.SplitHostPort(u.Host, "443")
		if err != nil {
			return Explanation{}, fmt.Errorf("%w %q: %v", ErrBadURL, rawURL, err)
		}
		cd := s.connectDecision(sc, inst, h, port)
		if !cd.Intercept {
			// A refused CONNECT gets the default block: no hook runs.
			return explanation(cd.Step, chain.Decision{}, false), nil
		}
	}
	d := s.requestDecision(sc, inst, h)
	return explanation(d.Step, d, hasBlockedHook(sc, inst.Class())), nil
}

func explanation(step chain.Step, d chain.Decision, hook bool) Explanation {
	e := Explanation{Step: int(step), Blocked: step.Blocks()}
	switch {
	case step.Blocks():
		reason := step.String()
		e.Reason = &reason
		if hook {
			name := chain.HandlerRef{Kind: chain.HandlerBlocked}.String()
			e.Handler = &name
		}
	case step.RunsHandler():
		name := d.Handler.String()
		e.Handler = &name
	}
	return e
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
