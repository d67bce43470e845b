// Package decision is the vocabulary that the wire layer (proxy) and the
// policy layer (handlers/policy) share: how a request was decided
// (Outcome), the answer to a CONNECT (Connect), and the fixed answers the
// sandbox gets when it is refused or when forwarding fails. Keeping them in
// one leaf gives one block response and one error-to-status mapping, as
// httputil.ReverseProxy has one ErrorHandler.
package decision

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// Outcome says how a request was handled, for logs, metrics and events.
type Outcome struct {
	Step    string // the chain step, or bad_request, no_script, unauthenticated
	Handler string // the handler that ran, if any
	Err     error  // detail for the log only; never sent to the sandbox
	// Blocked: the request was refused and nothing went out (a blocked
	// hook may have answered it).
	Blocked bool
}

// Connect is the answer to a CONNECT.
type Connect struct {
	Allow     bool
	Intercept bool           // terminate TLS and decide each inner request
	Step      string         // the chain step that decided
	Block     *http.Response // sent when !Allow; nil means Blocked(nil)
}

// Statuses outbound answers with besides the usual ones.
const (
	// StatusBlocked is Cloudflare's 520 for a refused request.
	StatusBlocked = 520
	// StatusClientClosed is recorded for a request whose sandbox went away
	// before it was answered (nginx's 499); the sandbox never sees it.
	StatusClientClosed = 499
)

// BlockedBody is the body of the default block response.
const BlockedBody = "Origin is disallowed"

// Text is a plain-text response with a fixed body.
func Text(req *http.Request, status int, body string) *http.Response {
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// Blocked is the default answer to a blocked request or CONNECT: 520
// "Origin is disallowed".
func Blocked(req *http.Request) *http.Response {
	r := Text(req, StatusBlocked, BlockedBody)
	r.Status = "520 Origin is disallowed"
	return r
}

// AuthRequired is the 407 that asks for the instance's credentials.
func AuthRequired(req *http.Request) *http.Response {
	r := Text(req, http.StatusProxyAuthRequired, "Proxy authentication required")
	r.Header.Set("Proxy-Authenticate", `Basic realm="outbound"`)
	return r
}

// FailureStatus maps an error of a forwarded request or a tunnel dial to
// the status the sandbox gets: 499 when the sandbox itself hung up (ctx
// canceled), 504 for a timeout, 502 for anything else.
func FailureStatus(ctx context.Context, err error) int {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return StatusClientClosed
	case IsTimeout(ctx, err):
		return http.StatusGatewayTimeout
	default:
		return http.StatusBadGateway
	}
}

// Failure is the answer for a forwarding error: FailureStatus with a fixed
// body that carries no internal detail. The error belongs in Outcome.Err.
func Failure(ctx context.Context, req *http.Request, err error) *http.Response {
	status := FailureStatus(ctx, err)
	switch status {
	case StatusClientClosed:
		return Text(req, status, "Client closed request")
	case http.StatusGatewayTimeout:
		return Text(req, status, "Upstream timed out")
	default:
		return Text(req, status, "Upstream unreachable")
	}
}

// IsTimeout reports whether err (or ctx) is a deadline or network timeout.
func IsTimeout(ctx context.Context, err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
