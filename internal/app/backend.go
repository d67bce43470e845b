package app

import (
	"context"
	"net/http"

	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/handlers/policy"
	"github.com/outbound-dev/outbound/proxy"
)

// backend adapts the policy service to the proxy's Backend interface.
// Outcome.Err goes to the log, where the server's redacting handler scrubs
// env values from it (see redact.go).
type backend struct{ svc *policy.Service }

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
	return resp, proxy.Outcome{Step: o.Step, Handler: o.Handler, Err: o.Err}
}
