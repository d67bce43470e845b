// Package proxy is the bytes on the wire: the proxy listener, instance
// identity, CONNECT, MITM TLS with per-instance CAs, the upstream transport
// and its private-network guard, HAR capture and metrics. What to do with a
// request is asked of a Backend; the proxy never decides policy itself.
package proxy

import (
	"context"
	"net/http"

	"github.com/outbound-dev/outbound/internal/decision"
)

// Instance is an authenticated sandbox instance.
type Instance interface {
	ID() string
	Class() string
	// Alive is false once the instance is deleted. A request or tunnel
	// authenticated before that starts nothing new: no trace entry, no
	// tunnel (so a later instance with the same id inherits nothing).
	Alive() bool
}

// Misdirector is implemented by a Backend that is one replica of a fleet.
// AuthenticateHome is Authenticate, and for credentials it refuses but
// that are right for an instance another replica serves, it names that
// replica (HOST:PORT) as home: the request gets 421 naming it, and never a
// certificate of this replica. One call checks the token once.
type Misdirector interface {
	AuthenticateHome(id, token string) (inst Instance, home string, ok bool)
}

// Backend decides and serves requests for the proxy.
type Backend interface {
	// Authenticate checks an instance id and token in constant time.
	Authenticate(id, token string) (Instance, bool)
	// Connect decides a CONNECT to host (normalised) and port.
	Connect(ctx context.Context, inst Instance, host string, port int) decision.Connect
	// Raw decides a captured TCP stream to host (normalised) that carries
	// neither TLS nor HTTP, whatever its port: steps 1 and 2, then only
	// enableInternet opens it.
	Raw(ctx context.Context, inst Instance, host string) decision.Connect
	// Handle serves one request whose URL is absolute (http://host:port/p or
	// https://host/p). It always returns a response to send to the sandbox:
	// handler errors are 500, timeouts 504, upstream failures 502, blocks 520.
	Handle(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome)
}
