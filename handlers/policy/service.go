// Package policy serves each request the proxy hands it: it asks the chain
// which step decides, runs the chosen handler in the engine, forwards, or
// builds the block response. It knows nothing of sockets; the assembly
// wires it to the proxy.
package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/outbound-dev/outbound/internal/host"
	"github.com/outbound-dev/outbound/jsapi"
)

// Invoker runs a handler; *engine.Pool is one.
type Invoker interface {
	Invoke(ctx context.Context, c engine.Call) (*http.Response, error)
}

// Script is one script generation as the Service uses it.
type Script struct {
	Policy  *chain.ScriptPolicy
	Invoker Invoker
	Info    *engine.ScriptInfo
}

// Scripts hands out the current generation. release must be called once
// the request (its response body included) is done with it; a nil Script
// means no script is loaded.
type Scripts interface {
	Acquire() (s *Script, release func())
}

// Options configures a Service.
type Options struct {
	Scripts  Scripts
	Registry *instances.Registry
	// Env returns the current env (vars, secrets, KV bindings).
	Env func() *jsapi.Env
	// Upstream forwards allowed requests (steps 7 and 8). It must enforce
	// the private-network guard.
	Upstream http.RoundTripper
	Logger   *slog.Logger
}

// Service decides and serves requests. Its three methods have the
// semantics of proxy.Backend; cmd adapts the types.
type Service struct {
	opts Options
	log  *slog.Logger
}

// New returns a Service.
func New(opts Options) (*Service, error) {
	if opts.Scripts == nil || opts.Registry == nil || opts.Upstream == nil {
		return nil, errors.New("handlers: Scripts, Registry and Upstream are required")
	}
	if opts.Env == nil {
		opts.Env = func() *jsapi.Env { return &jsapi.Env{} }
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Service{opts: opts, log: opts.Logger}, nil
}

// Authenticate checks an instance's id and token in constant time.
func (s *Service) Authenticate(id, token string) (*instances.Instance, bool) {
	return s.opts.Registry.Authenticate(id, token)
}

// Connect decides a CONNECT to a canonical host and port. A refused
// CONNECT gets the default block response: the blocked hook is for
// requests, and a tunnel has none yet.
func (s *Service) Connect(ctx context.Context, inst *instances.Instance, h string, port int) decision.Connect {
	return s.decideTunnel(inst, func(sc *Script) chain.ConnectDecision {
		return s.connectDecision(sc, inst, h, port)
	})
}

// Raw decides a captured TCP stream to a canonical host that carries
// neither TLS nor HTTP (chain.RawDecide), whatever its port.
func (s *Service) Raw(ctx context.Context, inst *instances.Instance, h string) decision.Connect {
	return s.decideTunnel(inst, func(sc *Script) chain.ConnectDecision {
		cls := s.class(sc, inst)
		if cls == nil {
			return chain.ConnectDecision{Step: chain.StepDefaultDeny}
		}
		return chain.RawDecide(cls, inst.Runtime(), h)
	})
}

// decideTunnel decides a tunnel with decide on the current script.
func (s *Service) decideTunnel(inst *instances.Instance, decide func(*Script) chain.ConnectDecision) decision.Connect {
	if !inst.Alive() {
		return decision.Connect{Step: "unauthenticated", Block: decision.AuthRequired(nil)}
	}
	sc, release := s.opts.Scripts.Acquire()
	defer release()
	if sc == nil {
		return decision.Connect{Step: "no_script", Block: decision.Text(nil, http.StatusServiceUnavailable, "No policy script is loaded")}
	}
	d := decide(sc)
	r := decision.Connect{Allow: d.Allow, Intercept: d.Intercept, Step: d.Step.String()}
	if !d.Allow {
		r.Block = decision.Blocked(nil)
	}
	return r
}

// Handle serves one request whose URL is absolute. It always returns a
// response: blocks are 520 (or the script's blocked hook), handler errors
// 500, handler timeouts 504, upstream failures 502 and upstream timeouts
// 504; 503 with Retry-After when too many of the instance's requests wait
// for a runtime or the runtime a handler was suspended on was retired. No
// body carries error text.
func (s *Service) Handle(ctx context.Context, inst *instances.Instance, req *http.Request) (*http.Response, decision.Outcome) {
	if !inst.Alive() {
		return decision.AuthRequired(req), decision.Outcome{Step: "unauthenticated", Blocked: true}
	}
	h, err := requestHost(req)
	if err != nil {
		return decision.Text(req, http.StatusBadRequest, "Bad request host"), decision.Outcome{Step: "bad_request", Err: err, Blocked: true}
	}
	sc, release := s.opts.Scripts.Acquire()
	if sc == nil {
		release()
		return decision.Text(req, http.StatusServiceUnavailable, "No policy script is loaded"), decision.Outcome{Step: "no_script", Blocked: true}
	}
	resp, out := s.handle(ctx, sc, inst, req, h)
	return releaseWithBody(resp, release), out
}

func (s *Service) handle(ctx context.Context, sc *Script, inst *instances.Instance, req *http.Request, h string) (*http.Response, decision.Outcome) {
	req = sanitize(ctx, req)
	d := s.requestDecision(sc, inst, h)
	if d.StaleByHost != "" || d.StaleOutbound != "" {
		s.log.Debug("skipped runtime overrides naming missing handlers", "instance", inst.ID(), "byHost", d.StaleByHost, "outbound", d.StaleOutbound)
	}
	switch {
	case d.Step.Blocks():
		return s.block(ctx, sc, inst, req, d.Step)
	case d.Step.RunsHandler():
		name := d.Handler.String()
		resp, err := sc.Invoker.Invoke(ctx, engine.Call{
			Class:      inst.Class(),
			Handler:    d.Handler,
			Request:    req,
			Env:        s.opts.Env(),
			InstanceID: inst.ID(),
			Params:     d.Params,
			Logger:     s.log, // console lines carry instance and class already
		})
		out := decision.Outcome{Step: d.Step.String(), Handler: name, Err: err}
		if err != nil {
			return handlerFailure(ctx, req, err), out
		}
		resp.Request = req
		return resp, out
	default: // steps 7 and 8
		resp, err := s.opts.Upstream.RoundTrip(req)
		out := decision.Outcome{Step: d.Step.String(), Err: err}
		if err != nil {
			return decision.Failure(ctx, req, err), out
		}
		return resp, out
	}
}

// class is the instance's class in sc, or nil, with a warning, when the
// script no longer defines it: the instance is then blocked at step 9.
func (s *Service) class(sc *Script, inst *instances.Instance) *chain.ClassPolicy {
	cls := sc.Policy.Class(inst.Class())
	if cls == nil {
		s.log.Warn("instance class not in the script; blocking", "instance", inst.ID(), "class", inst.Class())
	}
	return cls
}

// requestDecision is the chain's decision for a request to the canonical
// host h.
func (s *Service) requestDecision(sc *Script, inst *instances.Instance, h string) chain.Decision {
	cls := s.class(sc, inst)
	if cls == nil {
		return chain.Decision{Step: chain.StepDefaultDeny}
	}
	return chain.Decide(cls, inst.Runtime(), h)
}

// connectDecision is the chain's decision for a CONNECT to the canonical
// host h and port.
func (s *Service) connectDecision(sc *Script, inst *instances.Instance, h string, port int) chain.ConnectDecision {
	cls := s.class(sc, inst)
	if cls == nil {
		return chain.ConnectDecision{Step: chain.StepDefaultDeny}
	}
	return chain.ConnectDecide(cls, inst.Runtime(), h, port)
}

// handlerFailure is the answer to a handler that did not answer: 499 when
// the sandbox hung up (nobody reads it, and counting it as a handler
// timeout would inflate the 504s), 504 for a timeout (waiting for a runtime
// included), 503 when the request may simply be sent again, else 500.
func handlerFailure(ctx context.Context, req *http.Request, err error) *http.Response {
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return decision.Text(req, decision.StatusClientClosed, "Client closed request")
	case errors.Is(err, engine.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return decision.Text(req, http.StatusGatewayTimeout, "Handler timed out")
	case errors.Is(err, engine.ErrBusy):
		return retryLater(req, "Too many requests waiting for a handler")
	case errors.Is(err, engine.ErrRecycled):
		return retryLater(req, "Handler runtime restarted")
	default:
		return decision.Text(req, http.StatusInternalServerError, "Handler failed")
	}
}

// retryLater is a 503 that says the request may be sent again.
func retryLater(req *http.Request, body string) *http.Response {
	r := decision.Text(req, http.StatusServiceUnavailable, body)
	r.Header.Set("Retry-After", "1")
	return r
}

// block answers a blocked request: the script's blocked hook if it has
// one and it answers, else 520.
func (s *Service) block(ctx context.Context, sc *Script, inst *instances.Instance, req *http.Request, step chain.Step) (*http.Response, decision.Outcome) {
	out := decision.Outcome{Step: step.String(), Blocked: true}
	if !hasBlockedHook(sc, inst.Class()) {
		return decision.Blocked(req), out
	}
	out.Handler = "blocked"
	resp, err := sc.Invoker.Invoke(ctx, engine.Call{
		Class:      inst.Class(),
		Handler:    chain.HandlerRef{Kind: chain.HandlerBlocked},
		Request:    req,
		Env:        s.opts.Env(),
		InstanceID: inst.ID(),
		Reason:     step.String(),
		Logger:     s.log,
	})
	if err != nil {
		out.Err = fmt.Errorf("blocked hook: %w", err)
		return decision.Blocked(req), out
	}
	resp.Request = req
	return resp, out
}

// hasBlockedHook: the class has a blocked hook, its own or the module's;
// a class the script lacks can only have the module's.
func hasBlockedHook(sc *Script, class string) bool {
	if cls := sc.Policy.Class(class); cls != nil {
		return cls.Spec().HasBlocked
	}
	return sc.Info != nil && sc.Info.HasBlocked
}

// requestHost is the canonical host of an absolute request URL.
func requestHost(req *http.Request) (string, error) {
	if req.URL == nil {
		return "", errors.New("request has no URL")
	}
	return urlHost(req.URL)
}

// urlHost is the canonical host of an absolute http or https URL.
func urlHost(u *url.URL) (string, error) {
	if u.Host == "" {
		return "", errors.New("request URL has no host")
	}
	def := "80"
	switch strings.ToLower(u.Scheme) {
	case "https":
		def = "443"
	case "http":
	default:
		return "", fmt.Errorf("request URL scheme %q is not http or https", u.Scheme)
	}
	h, _, err := host.SplitHostPort(u.Host, def)
	return h, err
}

// sanitize returns the request as a handler or upstream sees it: bound to
// ctx, client-side (no RequestURI), and without the sandbox's proxy
// credentials, which are its instance token.
func sanitize(ctx context.Context, req *http.Request) *http.Request {
	out := req.WithContext(ctx)
	out.RequestURI = ""
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	out.Header.Del("Proxy-Authorization")
	out.Header.Del("Proxy-Connection")
	return out
}

// releaseWithBody calls release when the response body is closed, so that
// a generation stays alive while a handler's response streams.
func releaseWithBody(resp *http.Response, release func()) *http.Response {
	if resp.Body == nil || resp.Body == http.NoBody {
		release()
		return resp
	}
	rb := &releasingBody{ReadCloser: resp.Body, release: release}
	// An upgraded connection (101) must stay writable, or the proxy cannot
	// relay the sandbox's side of a WebSocket.
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
		resp.Body = &releasingConn{releasingBody: rb, w: rwc}
	} else {
		resp.Body = rb
	}
	return resp
}

type releasingConn struct {
	*releasingBody
	w io.Writer
}

func (c *releasingConn) Write(p []byte) (int, error) { return c.w.Write(p) }

type releasingBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
