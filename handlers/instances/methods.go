package instances

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/handlers/hostmatch"
)

// methods are the runtime methods of docs/policy.md, by name, with how many
// arguments each takes (min, max).
var methods = map[string]struct {
	min, max int
	call     func(r *Registry, ctx context.Context, id string, a args) (View, error)
}{
	"setOutboundHandler": {1, 2, func(r *Registry, ctx context.Context, id string, a args) (View, error) {
		name, err := a.str(0, "name")
		if err != nil {
			return View{}, err
		}
		return r.SetOutboundHandler(ctx, id, name, a.params(1))
	}},
	"setOutboundByHost": {2, 3, func(r *Registry, ctx context.Context, id string, a args) (View, error) {
		host, err := a.str(0, "host")
		if err != nil {
			return View{}, err
		}
		name, err := a.str(1, "name")
		if err != nil {
			return View{}, err
		}
		return r.SetOutboundByHost(ctx, id, host, name, a.params(2))
	}},
	"setOutboundByHosts": {1, 1, func(r *Registry, ctx context.Context, id string, a args) (View, error) {
		entries, err := a.byHosts(0)
		if err != nil {
			return View{}, err
		}
		return r.SetOutboundByHosts(ctx, id, entries)
	}},
	"removeOutboundByHost": {1, 1, func(r *Registry, ctx context.Context, id string, a args) (View, error) {
		host, err := a.str(0, "host")
		if err != nil {
			return View{}, err
		}
		return r.RemoveOutboundByHost(ctx, id, host)
	}},
	"setAllowedHosts": {1, 1, func(r *Registry, ctx context.Context, id string, a args) (View, error) {
		l, err := a.strList(0, "hosts")
		if err != nil {
			return View{}, err
		}
		return r.SetAllowedHosts(ctx, id, l)
	}},
	"setDeniedHosts": {1, 1, func(r *Registry, ctx context.Context, id string, a args) (View, error) {
		l, err := a.strList(0, "hosts")
		if err != nil {
			return View{}, err
		}
		return r.SetDeniedHosts(ctx, id, l)
	}},
	"allowHost":         {1, 1, oneHost((*Registry).AllowHost)},
	"denyHost":          {1, 1, oneHost((*Registry).DenyHost)},
	"removeAllowedHost": {1, 1, oneHost((*Registry).RemoveAllowedHost)},
	"removeDeniedHost":  {1, 1, oneHost((*Registry).RemoveDeniedHost)},
}

func oneHost(m func(*Registry, context.Context, string, string) (View, error)) func(*Registry, context.Context, string, args) (View, error) {
	return func(r *Registry, ctx context.Context, id string, a args) (View, error) {
		h, err := a.str(0, "host")
		if err != nil {
			return View{}, err
		}
		return m(r, ctx, id, h)
	}
}

// Methods returns the runtime method names, sorted.
func Methods() []string {
	out := make([]string, 0, len(methods))
	for m := range methods {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// IsMethod reports whether name is a runtime method.
func IsMethod(name string) bool {
	_, ok := methods[name]
	return ok
}

// Call runs a runtime method by name with JSON arguments, as the control
// API receives them. Errors: ErrUnknownMethod and ErrNotFound (404),
// ErrBadArgs, ErrUnknownHandler and hostmatch.ErrBadPattern (400).
func (r *Registry) Call(ctx context.Context, id, method string, rawArgs []json.RawMessage) (View, error) {
	m, ok := methods[method]
	if !ok {
		return View{}, fmt.Errorf("%w: %q", ErrUnknownMethod, method)
	}
	if _, err := r.Lookup(ctx, id); err != nil {
		return View{}, err
	}
	if n := len(rawArgs); n < m.min || n > m.max {
		want := fmt.Sprint(m.min)
		if m.max != m.min {
			want = fmt.Sprintf("%d to %d", m.min, m.max)
		}
		return View{}, fmt.Errorf("%w: %s takes %s arguments, got %d", ErrBadArgs, method, want, n)
	}
	return m.call(r, ctx, id, args{method: method, raw: rawArgs})
}

// args decodes a method's JSON arguments with errors that say which one.
type args struct {
	method string
	raw    []json.RawMessage
}

func (a args) bad(i int, name, want string) error {
	return fmt.Errorf("%w: %s argument %d (%s) must be %s", ErrBadArgs, a.method, i+1, name, want)
}

func (a args) str(i int, name string) (string, error) {
	var s string
	raw := bytes.TrimSpace(a.raw[i])
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", a.bad(i, name, "a string")
	}
	return s, nil
}

func (a args) strList(i int, name string) ([]string, error) {
	raw := bytes.TrimSpace(a.raw[i])
	var l []string
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &l) != nil {
		return nil, a.bad(i, name, "an array of strings")
	}
	return l, nil
}

// params returns argument i compacted, or nil when it was not given.
func (a args) params(i int) json.RawMessage {
	if i >= len(a.raw) {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, a.raw[i]); err != nil {
		return nil
	}
	return b.Bytes()
}

// byHosts decodes {host: name | {method, params?}} in key order.
func (a args) byHosts(i int) ([]chain.HostChoice, error) {
	raw := bytes.TrimSpace(a.raw[i])
	if len(raw) == 0 || raw[0] != '{' {
		return nil, a.bad(i, "handlers", "an object of host to handler name or {method, params}")
	}
	var out []chain.HostChoice
	err := decodeOrderedObject(raw, func(host string, v json.RawMessage) error {
		c, err := decodeChoice(v)
		if err != nil {
			return fmt.Errorf("%w: %s: host %q: %v", ErrBadArgs, a.method, host, err)
		}
		out = append(out, chain.HostChoice{Host: host, Choice: c})
		return nil
	})
	if err != nil {
		if Status(err) == 400 {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrBadArgs, a.method, err)
	}
	return out, nil
}

func decodeChoice(v json.RawMessage) (chain.Choice, error) {
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '"' {
		var name string
		err := json.Unmarshal(v, &name)
		return chain.Choice{Method: name}, err
	}
	if len(v) == 0 || v[0] != '{' {
		return chain.Choice{}, fmt.Errorf("want a handler name or {method, params}")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		return chain.Choice{}, err
	}
	var c chain.Choice
	if mv, ok := m["method"]; !ok || json.Unmarshal(mv, &c.Method) != nil {
		return chain.Choice{}, fmt.Errorf("method must be a string")
	}
	if p, ok := m["params"]; ok {
		var b bytes.Buffer
		json.Compact(&b, p) // valid: it came out of a valid object
		c.Params = b.Bytes()
	}
	return c, nil
}

// checkHandler is upstream's validation of a handler name.
func checkHandler(cls *chain.ClassPolicy, class, name string) error {
	if cls == nil || !cls.HasHandler(name) {
		return &UnknownHandlerError{Method: name, Class: class}
	}
	return nil
}

// checkPatterns validates a host list as it is set.
func checkPatterns(method string, l []string) error {
	if _, err := hostmatch.Compile(l); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadArgs, method, err)
	}
	return nil
}

// SetOutboundHandler picks the runtime catch-all handler. params nil means
// none (ctx.params is undefined).
func (r *Registry) SetOutboundHandler(ctx context.Context, id, name string, params json.RawMessage) (View, error) {
	return r.update(ctx, id, func(cls *chain.ClassPolicy, class string, o *chain.Overrides) error {
		if err := checkHandler(cls, class, name); err != nil {
			return err
		}
		o.Outbound = &chain.Choice{Method: name, Params: params}
		return nil
	})
}

// SetOutboundByHost sets the runtime handler for one host pattern. The key
// is the normalised pattern; setting an existing key keeps its position.
func (r *Registry) SetOutboundByHost(ctx context.Context, id, host, name string, params json.RawMessage) (View, error) {
	return r.update(ctx, id, func(cls *chain.ClassPolicy, class string, o *chain.Overrides) error {
		if err := checkHandler(cls, class, name); err != nil {
			return err
		}
		key, err := hostmatch.Normalize(host)
		if err != nil {
			return fmt.Errorf("%w: setOutboundByHost: %w", ErrBadArgs, err)
		}
		o.ByHost = putByHost(o.ByHost, chain.HostChoice{Host: key, Choice: chain.Choice{Method: name, Params: params}})
		return nil
	})
}

func putByHost(l []chain.HostChoice, e chain.HostChoice) []chain.HostChoice {
	for i := range l {
		if l[i].Host == e.Host {
			l[i] = e
			return l
		}
	}
	return append(l, e)
}

// SetOutboundByHosts replaces every runtime per-host handler. Every name
// and pattern is validated before anything changes.
func (r *Registry) SetOutboundByHosts(ctx context.Context, id string, entries []chain.HostChoice) (View, error) {
	return r.update(ctx, id, func(cls *chain.ClassPolicy, class string, o *chain.Overrides) error {
		for _, e := range entries {
			if err := checkHandler(cls, class, e.Method); err != nil {
				return err
			}
		}
		next := []chain.HostChoice{}
		for _, e := range entries {
			key, err := hostmatch.Normalize(e.Host)
			if err != nil {
				return fmt.Errorf("%w: setOutboundByHosts: %w", ErrBadArgs, err)
			}
			e.Host = key
			next = putByHost(next, e)
		}
		o.ByHost = next
		return nil
	})
}

// RemoveOutboundByHost removes the runtime handler of a host pattern.
func (r *Registry) RemoveOutboundByHost(ctx context.Context, id, host string) (View, error) {
	return r.update(ctx, id, func(_ *chain.ClassPolicy, _ string, o *chain.Overrides) error {
		key, err := hostmatch.Normalize(host)
		if err != nil {
			return fmt.Errorf("%w: removeOutboundByHost: %w", ErrBadArgs, err)
		}
		o.ByHost = slices.DeleteFunc(o.ByHost, func(e chain.HostChoice) bool { return e.Host == key })
		return nil
	})
}

// SetAllowedHosts replaces the effective allow list. An empty list blocks
// every host.
func (r *Registry) SetAllowedHosts(ctx context.Context, id string, hosts []string) (View, error) {
	return r.update(ctx, id, func(_ *chain.ClassPolicy, _ string, o *chain.Overrides) error {
		if err := checkPatterns("setAllowedHosts", hosts); err != nil {
			return err
		}
		o.AllowedHosts = append([]string{}, hosts...)
		return nil
	})
}

// SetDeniedHosts replaces the effective deny list.
func (r *Registry) SetDeniedHosts(ctx context.Context, id string, hosts []string) (View, error) {
	return r.update(ctx, id, func(_ *chain.ClassPolicy, _ string, o *chain.Overrides) error {
		if err := checkPatterns("setDeniedHosts", hosts); err != nil {
			return err
		}
		o.DeniedHosts = append([]string{}, hosts...)
		return nil
	})
}

// listOf selects the allowed or denied list of overrides and class.
type listOf func(o *chain.Overrides, cls *chain.ClassPolicy) (override *[]string, classList []string)

func allowedList(o *chain.Overrides, cls *chain.ClassPolicy) (*[]string, []string) {
	if cls == nil {
		return &o.AllowedHosts, nil
	}
	return &o.AllowedHosts, cls.Spec().AllowedHosts
}

func deniedList(o *chain.Overrides, cls *chain.ClassPolicy) (*[]string, []string) {
	if cls == nil {
		return &o.DeniedHosts, nil
	}
	return &o.DeniedHosts, cls.Spec().DeniedHosts
}

// appendHost adds h to the effective list (the override, else the class
// list, else []) unless it is already there.
func (r *Registry) appendHost(ctx context.Context, id, method, h string, which listOf) (View, error) {
	return r.update(ctx, id, func(cls *chain.ClassPolicy, _ string, o *chain.Overrides) error {
		if err := checkPatterns(method, []string{h}); err != nil {
			return err
		}
		ov, classList := which(o, cls)
		l := *ov
		if l == nil {
			l = append([]string{}, classList...)
		}
		if !slices.Contains(l, h) {
			l = append(l, h)
		}
		*ov = l
		return nil
	})
}

// removeHost removes the exact string h from the effective list. When no
// list is in effect there is nothing to remove, and the list stays unset.
func (r *Registry) removeHost(ctx context.Context, id, h string, which listOf) (View, error) {
	return r.update(ctx, id, func(cls *chain.ClassPolicy, _ string, o *chain.Overrides) error {
		ov, classList := which(o, cls)
		l := *ov
		if l == nil {
			if classList == nil {
				return nil
			}
			l = append([]string{}, classList...)
		}
		*ov = slices.DeleteFunc(l, func(s string) bool { return s == h })
		return nil
	})
}

// AllowHost appends h to the effective allow list.
func (r *Registry) AllowHost(ctx context.Context, id, h string) (View, error) {
	return r.appendHost(ctx, id, "allowHost", h, allowedList)
}

// DenyHost appends h to the effective deny list.
func (r *Registry) DenyHost(ctx context.Context, id, h string) (View, error) {
	return r.appendHost(ctx, id, "denyHost", h, deniedList)
}

// RemoveAllowedHost removes the exact string h from the effective allow list.
func (r *Registry) RemoveAllowedHost(ctx context.Context, id, h string) (View, error) {
	return r.removeHost(ctx, id, h, allowedList)
}

// RemoveDeniedHost removes the exact string h from the effective deny list.
func (r *Registry) RemoveDeniedHost(ctx context.Context, id, h string) (View, error) {
	return r.removeHost(ctx, id, h, deniedList)
}
