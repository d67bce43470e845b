package app

import (
	"context"
	"net/http"

	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/handlers/policy"
	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/outbound-dev/outbound/proxy"
)

// backend gives the policy service to the proxy: the proxy knows instances
// only as proxy.Instance, the service needs the registry's own type.
// Outcome.Err goes to the log, where the redacting handler scrubs env values
// from it (see redact.go).
type backend struct {
	svc *policy.Service
	reg *instances.Registry
}

// AuthenticateHome is Authenticate, naming the replica serving an instance
// whose credentials are right but which this replica does not serve
// (proxy.Misdirector).
func (b backend) AuthenticateHome(id, token string) (proxy.Instance, string, bool) {
	inst, home, ok := b.reg.AuthenticateHome(id, token)
	if !ok {
		return nil, home, false
	}
	return inst, "", true
}

func (b backend) Authenticate(id, token string) (proxy.Instance, bool) {
	inst, ok := b.svc.Authenticate(id, token)
	if !ok {
		return nil, false
	}
	return inst, true
}

func (b backend) Connect(ctx context.Context, inst proxy.Instance, host string, port int) decision.Connect {
	return b.svc.Connect(ctx, inst.(*instances.Instance), host, port)
}

func (b backend) Raw(ctx context.Context, inst proxy.Instance, host string) decision.Connect {
	return b.svc.Raw(ctx, inst.(*instances.Instance), host)
}

func (b backend) Handle(ctx context.Context, inst proxy.Instance, req *http.Request) (*http.Response, decision.Outcome) {
	return b.svc.Handle(ctx, inst.(*instances.Instance), req)
}
