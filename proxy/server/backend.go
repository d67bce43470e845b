package server

import (
	"context"
	"net/http"
	"strings"

	"github.com/outbound-dev/outbound/handlers"
	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/jsapi"
	"github.com/outbound-dev/outbound/proxy"
)

// backend adapts the policy service to the proxy's Backend interface.
// It redacts env values from the errors it hands on, because those go to
// the log and a handler's exception text may carry a secret (throw new
// Error("bad key " + env.KEY), or a fetch error naming a URL built with one).
type backend struct {
	svc *handlers.Service
	env func() *jsapi.Env
}

func (b backend) Authenticate(id, token string) (proxy.Instance, bool) {
	in, ok := b.svc.Authenticate(id, token)
	if !ok {
		return nil, false
	}
	return in, true
}

func (b backend) Connect(ctx context.Context, inst proxy.Instance, host string, port int) proxy.ConnectDecision {
	r := b.svc.Connect(ctx, inst.(*instances.Instance), host, port)
	return proxy.ConnectDecision{Allow: r.Allow, Intercept: r.Intercept, Step: r.Step, Block: r.Block}
}

func (b backend) Handle(ctx context.Context, inst proxy.Instance, req *http.Request) (*http.Response, proxy.Outcome) {
	resp, o := b.svc.Handle(ctx, inst.(*instances.Instance), req)
	return resp, proxy.Outcome{Step: o.Step, Handler: o.Handler, Err: redact(o.Err, b.env())}
}

// minRedactLen is the shortest env value redacted from error text: shorter
// ones ("1", "on") are flags, and replacing them would garble every message.
const minRedactLen = 4

// redact returns err with every env value in its text replaced, or err
// itself when its text holds none. The original stays reachable through
// Unwrap for errors.Is and errors.As.
func redact(err error, env *jsapi.Env) error {
	if err == nil || env == nil {
		return err
	}
	msg := err.Error()
	clean := msg
	for _, v := range env.Vars {
		if len(v) >= minRedactLen {
			clean = strings.ReplaceAll(clean, v, "[redacted]")
		}
	}
	if clean == msg {
		return err
	}
	return &redactedError{msg: clean, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
