// Package chain owns the decision: the nine steps of docs/policy.md
// "Evaluation order" over a class's compiled spec (ClassSpec) and an
// instance's compiled runtime overrides, for plain requests (Decide) and for
// CONNECT (ConnectDecide). It is pure: it never enters JS, never touches the
// network, and never changes state. Running the chosen handler is the
// engine's job; keeping and persisting overrides is package instances'.
package chain

import (
	"encoding/json"
	"fmt"

	"github.com/outbound-dev/outbound/handlers/hostmatch"
)

// Step is the step of the chain that decided. Logs and metrics read it.
type Step uint8

const (
	StepDenied          Step = iota + 1 // 1: deniedHosts matched
	StepNotAllowed                      // 2: allowedHosts set and did not match
	StepByHostRuntime                   // 3: setOutboundByHost handler
	StepByHost                          // 4: static outboundByHost handler
	StepOutboundRuntime                 // 5: setOutboundHandler handler
	StepOutbound                        // 6: static outbound
	StepAllowedFallback                 // 7: allowedHosts set and matched: forward
	StepInternet                        // 8: enableInternet: forward
	StepDefaultDeny                     // 9: nothing allowed it
	StepIntercept                       // CONNECT only: TLS is terminated, inner requests decide
)

var stepNames = [...]string{
	StepDenied:          "denied",
	StepNotAllowed:      "not_allowed",
	StepByHostRuntime:   "by_host_runtime",
	StepByHost:          "by_host",
	StepOutboundRuntime: "outbound_runtime",
	StepOutbound:        "outbound",
	StepAllowedFallback: "allowed_fallback",
	StepInternet:        "internet",
	StepDefaultDeny:     "default_deny",
	StepIntercept:       "intercept",
}

// String returns the step's name as logs, metrics and ctx.reason use it.
func (s Step) String() string {
	if int(s) < len(stepNames) && stepNames[s] != "" {
		return stepNames[s]
	}
	return fmt.Sprintf("step(%d)", uint8(s))
}

// Blocks reports whether the step blocks the request.
func (s Step) Blocks() bool {
	return s == StepDenied || s == StepNotAllowed || s == StepDefaultDeny
}

// RunsHandler reports whether the step runs a script handler.
func (s Step) RunsHandler() bool {
	return s >= StepByHostRuntime && s <= StepOutbound
}

// Forwards reports whether the step sends the request to the network as is.
func (s Step) Forwards() bool {
	return s == StepAllowedFallback || s == StepInternet
}

// Decision is the chain's answer for one request.
type Decision struct {
	Step Step
	// Handler is the handler to run when Step.RunsHandler().
	Handler HandlerRef
	// Params is the JSON of the runtime params for runtime steps; nil means
	// none were given (ctx.params is undefined).
	Params json.RawMessage
	// StaleByHost and StaleOutbound name runtime overrides that matched but
	// were skipped because the script has no such handler any more.
	StaleByHost, StaleOutbound string
}

// Reason is the step name, as the blocked hook's ctx.reason.
func (d Decision) Reason() string { return d.Step.String() }

// ClassPolicy is one class's static config, compiled. Immutable.
type ClassPolicy struct {
	Name           string
	EnableInternet bool
	InterceptHTTPS bool
	HasOutbound    bool
	allowed        *hostmatch.List // nil when the class does not set allowedHosts
	denied         *hostmatch.List
	byHost         hostmatch.Table[string] // value: the key as written in the script
	handlers       map[string]struct{}
	spec           ClassSpec
}

// CompileClass compiles one class. An error names the class and the pattern.
func CompileClass(c ClassSpec) (*ClassPolicy, error) {
	p := &ClassPolicy{
		Name:           c.Name,
		EnableInternet: c.EnableInternet,
		InterceptHTTPS: c.InterceptHTTPS,
		HasOutbound:    c.HasOutbound,
		handlers:       make(map[string]struct{}, len(c.Handlers)),
		spec:           c,
	}
	var err error
	if c.AllowedHosts != nil {
		if p.allowed, err = hostmatch.Compile(c.AllowedHosts); err != nil {
			return nil, fmt.Errorf("class %s: allowedHosts: %w", c.Name, err)
		}
	}
	if c.DeniedHosts != nil {
		if p.denied, err = hostmatch.Compile(c.DeniedHosts); err != nil {
			return nil, fmt.Errorf("class %s: deniedHosts: %w", c.Name, err)
		}
	}
	for _, k := range c.ByHostKeys {
		if _, err := p.byHost.Add(k, k); err != nil {
			return nil, fmt.Errorf("class %s: outboundByHost: %w", c.Name, err)
		}
	}
	for _, h := range c.Handlers {
		p.handlers[h] = struct{}{}
	}
	return p, nil
}

// HasHandler reports whether outboundHandlers has name.
func (p *ClassPolicy) HasHandler(name string) bool {
	_, ok := p.handlers[name]
	return ok
}

// Spec returns the class spec the policy was compiled from. Its slices are
// shared and must not be modified.
func (p *ClassPolicy) Spec() ClassSpec { return p.spec }

// ScriptPolicy is every class of one script generation, compiled.
type ScriptPolicy struct {
	names   []string // in definition order
	classes map[string]*ClassPolicy
}

// CompileScript compiles every class of a loaded script. Hot reload calls it
// once per generation; a bad pattern fails the generation.
func CompileScript(classes []ClassSpec) (*ScriptPolicy, error) {
	s := &ScriptPolicy{classes: make(map[string]*ClassPolicy, len(classes))}
	for _, c := range classes {
		if _, dup := s.classes[c.Name]; dup {
			return nil, fmt.Errorf("class %s defined twice", c.Name)
		}
		p, err := CompileClass(c)
		if err != nil {
			return nil, err
		}
		s.classes[c.Name] = p
		s.names = append(s.names, c.Name)
	}
	return s, nil
}

// Class returns the named class, or nil. A nil ScriptPolicy (no script
// loaded) has no classes.
func (s *ScriptPolicy) Class(name string) *ClassPolicy {
	if s == nil {
		return nil
	}
	return s.classes[name]
}

// DefaultClass returns the class an instance gets when it names none: the
// only class, if the script defines exactly one.
func (s *ScriptPolicy) DefaultClass() (string, bool) {
	if s != nil && len(s.names) == 1 {
		return s.names[0], true
	}
	return "", false
}

// effective returns the runtime list if one is set, else the class's.
func (p *ClassPolicy) effective(rt *Runtime) (allowed, denied *hostmatch.List) {
	allowed, denied = p.allowed, p.denied
	if rt != nil {
		if rt.allowed != nil {
			allowed = rt.allowed
		}
		if rt.denied != nil {
			denied = rt.denied
		}
	}
	return allowed, denied
}

// gate is steps 1 and 2, which gate all traffic, handlers included: the
// step that blocks h, or 0 and the effective allowedHosts (nil if unset).
func (p *ClassPolicy) gate(rt *Runtime, h string) (Step, *hostmatch.List) {
	allowed, denied := p.effective(rt)
	if denied != nil && denied.Match(h) {
		return StepDenied, nil
	}
	if allowed != nil && !allowed.Match(h) {
		return StepNotAllowed, nil
	}
	return 0, allowed
}

// Decide runs the nine steps for a request to the canonical host h. rt may
// be nil when the instance has no overrides.
func Decide(p *ClassPolicy, rt *Runtime, h string) Decision {
	blocked, allowed := p.gate(rt, h)
	if blocked != 0 {
		return Decision{Step: blocked}
	}
	var d Decision
	// 3: runtime per-host; an override naming a missing handler is skipped.
	if rt != nil {
		if c, ok := rt.byHost.Lookup(h); ok {
			if p.HasHandler(c.Method) {
				return Decision{Step: StepByHostRuntime, Handler: HandlerRef{Kind: HandlerNamed, Key: c.Method}, Params: c.Params}
			}
			d.StaleByHost = c.Method
		}
	}
	// 4: static per-host.
	if key, ok := p.byHost.Lookup(h); ok {
		d.Step, d.Handler = StepByHost, HandlerRef{Kind: HandlerByHost, Key: key}
		return d
	}
	// 5: runtime catch-all.
	if rt != nil && rt.outbound != nil {
		if p.HasHandler(rt.outbound.Method) {
			d.Step, d.Handler, d.Params = StepOutboundRuntime, HandlerRef{Kind: HandlerNamed, Key: rt.outbound.Method}, rt.outbound.Params
			return d
		}
		d.StaleOutbound = rt.outbound.Method
	}
	// 6: static catch-all.
	if p.HasOutbound {
		d.Step, d.Handler = StepOutbound, HandlerRef{Kind: HandlerOutbound}
		return d
	}
	d.Step = fallback(p, allowed)
	return d
}

// fallback is steps 7, 8 and 9, once the lists have let the host through.
func fallback(p *ClassPolicy, allowed *hostmatch.List) Step {
	switch {
	case allowed != nil:
		return StepAllowedFallback
	case p.EnableInternet:
		return StepInternet
	default:
		return StepDefaultDeny
	}
}

// ConnectDecision is the chain's answer to a CONNECT.
type ConnectDecision struct {
	Step      Step
	Allow     bool // open the tunnel
	Intercept bool // terminate TLS; each inner request goes through Decide
}

// ConnectDecide decides a CONNECT to the canonical host h and port
// (docs/policy.md "HTTPS, CONNECT and other traffic"):
//   - interceptHttps and port 443: intercept, and decide each inner request;
//   - port 443 without interception, or port 80: steps 1, 2, 7, 8, 9 — no
//     handler can run on an opaque tunnel;
//   - any other port: steps 1 and 2, then only enableInternet (step 8)
//     opens it, so an allowed host cannot be pivoted onto SSH or SMTP.
func ConnectDecide(p *ClassPolicy, rt *Runtime, h string, port int) ConnectDecision {
	if p.InterceptHTTPS && port == 443 {
		return ConnectDecision{Step: StepIntercept, Allow: true, Intercept: true}
	}
	blocked, allowed := p.gate(rt, h)
	if blocked != 0 {
		return ConnectDecision{Step: blocked}
	}
	if port != 443 && port != 80 {
		if p.EnableInternet {
			return ConnectDecision{Step: StepInternet, Allow: true}
		}
		return ConnectDecision{Step: StepDefaultDeny}
	}
	s := fallback(p, allowed)
	return ConnectDecision{Step: s, Allow: !s.Blocks()}
}

// RawDecide decides a raw TCP stream to the canonical host h that carries
// neither TLS nor HTTP, whatever its port (a connection captured by the
// jail or the transparent listener): steps 1 and 2, then only
// enableInternet opens it, as for a CONNECT to a port other than 80 or 443.
func RawDecide(p *ClassPolicy, rt *Runtime, h string) ConnectDecision {
	return ConnectDecide(p, rt, h, 0) // port 0: neither 80 nor 443, and never intercepted
}
