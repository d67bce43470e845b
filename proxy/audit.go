package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/outbound-dev/outbound/internal/events"
)

// Steps the proxy itself decides, for the audit log and metrics. Every other
// step name comes from the Backend.
const (
	stepAuth        = "auth"         // missing or wrong credentials: 407
	stepAuthLimit   = "auth_limit"   // too many failed authentications: 429
	stepConnLimit   = "conn_limit"   // too many client connections: 503
	stepBadRequest  = "bad_request"  // not a proxy request, bad target: 400
	stepMisdirected = "misdirected"  // inner Host is not the CONNECT host: 421
	stepOtherHome   = "other_home"   // the instance is served by another replica of the fleet: 421
	stepSelf        = "self"         // addressed to the proxy itself: 400
	stepTunnelLimit = "tunnel_limit" // too many tunnels: 503
	stepNoBackend   = "no_response"  // the Backend returned no response: 502
	stepHandshake   = "tls_handshake"
	stepDial        = "dial" // raw tunnel dial failed: 502/504
)

// refusals are the proxy's own steps that refuse: nothing goes out.
var refusals = map[string]bool{
	stepAuth: true, stepAuthLimit: true, stepConnLimit: true, stepBadRequest: true, stepMisdirected: true,
	stepOtherHome: true, stepSelf: true, stepTunnelLimit: true, stepShutdown: true,
}

// Tunnel modes, for metrics and the log.
const (
	modeRaw       = "raw"
	modeIntercept = "intercept"
)

// audit is the record of one request (or CONNECT tunnel) written as one log
// line. It holds no header values and no credentials.
type audit struct {
	start             time.Time
	id                string
	instance          Instance
	method            string
	scheme            string
	host              string
	port              int
	path              string // without the query, which may carry secrets
	step              string
	blocked           bool // the Backend refused it (decision.Outcome.Blocked, !Connect.Allow)
	handler           string
	status            int
	bytesIn, bytesOut int64
	err               error  // Outcome.Err or a proxy-side failure; logged, never sent
	via               string // how a captured connection arrived ("jail", "transparent"); "" for proxied
}

func (s *Server) logAudit(ctx context.Context, a *audit) {
	s.opts.Metrics.request(a.step, a.status)
	if s.opts.Events.Active() {
		s.opts.Events.Decision(a.decision())
	}
	level := slog.LevelInfo
	if a.err != nil {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(ctx, level) {
		return
	}
	var inst, class string
	if a.instance != nil {
		inst, class = a.instance.ID(), a.instance.Class()
	}
	attrs := []slog.Attr{
		slog.String("request_id", a.id),
		slog.String("instance", inst),
		slog.String("class", class),
		slog.String("method", a.method),
		slog.String("scheme", a.scheme),
		slog.String("host", a.host),
		slog.Int("port", a.port),
		slog.String("path", a.path),
		slog.String("step", a.step),
		slog.String("handler", a.handler),
		slog.Int("status", a.status),
		slog.Int64("bytes_in", a.bytesIn),
		slog.Int64("bytes_out", a.bytesOut),
		slog.Duration("duration", time.Since(a.start)),
	}
	if a.via != "" {
		attrs = append(attrs, slog.String("via", a.via))
	}
	if a.err != nil {
		// The Backend's error text is for the operator (docs/proxy.md
		// "Answers"); the sandbox never sees it.
		attrs = append(attrs, slog.String("error", a.err.Error()))
	}
	s.log.LogAttrs(ctx, level, "request", attrs...)
}

// decision is the record as the live event stream shows it.
func (a *audit) decision() events.Decision {
	d := events.Decision{Time: a.start, Method: a.method, Host: a.host, Path: a.path, Step: a.step,
		Blocked: a.blocked || refusals[a.step],
		Status:  a.status, MS: float64(time.Since(a.start).Microseconds()) / 1000}
	if a.instance != nil {
		d.Instance = a.instance.ID()
	}
	if a.handler != "" {
		d.Handler = &a.handler
	}
	return d
}

// plain writes a short proxy-generated answer. Its text never carries
// internal detail.
func plain(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}
