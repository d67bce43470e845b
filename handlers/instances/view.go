package instances

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/outbound-dev/outbound/handlers/chain"
)

// View is an instance as the control API shows it (docs/control-api.md "The instance view"). The
// lists are the effective ones: the runtime override if set, else the
// class's. Stale, ClassMissing, Created, CAPersisted and CANotAfter are
// additions.
type View struct {
	ID    string `json:"id"`
	Class string `json:"class"`
	// Home is the advertised proxy address of the replica serving the
	// instance: the host and port of its proxy_url.
	Home            string       `json:"home"`
	EnableInternet  bool         `json:"enableInternet"`
	InterceptHTTPS  bool         `json:"interceptHttps"`
	AllowedHosts    []string     `json:"allowedHosts"`
	DeniedHosts     []string     `json:"deniedHosts"`
	OutboundHandler *HandlerView `json:"outboundHandler"`
	OutboundByHost  ByHostView   `json:"outboundByHost"`

	Created time.Time `json:"created"`
	// Sources are the client ranges the transparent listener attributes to
	// the instance.
	Sources []string `json:"sources,omitempty"`
	// ClassMissing is true when the current script has no such class; the
	// instance is then blocked until a reload brings the class back.
	ClassMissing bool `json:"classMissing,omitempty"`
	// Stale lists overrides naming handlers the current script lacks; they
	// are skipped at request time and work again if the handler returns.
	Stale []StaleOverride `json:"stale,omitempty"`
	// CAPersisted is always false: the instance CA is ephemeral, as
	// upstream's, and a restart gives the instance a new one.
	CAPersisted bool `json:"caPersisted"`
	// CANotAfter is when the instance CA expires. The registry does not
	// hold CAs: the assembly fills it in, and it is absent only while an
	// instance is being created.
	CANotAfter *time.Time `json:"caNotAfter,omitempty"`
}

// HandlerView is a runtime handler choice; Params is null when none given.
type HandlerView struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// StaleOverride is one override whose handler is missing.
type StaleOverride struct {
	Override string `json:"override"` // "outboundHandler" or "outboundByHost"
	Host     string `json:"host,omitempty"`
	Method   string `json:"method"`
}

// ByHostView is the runtime per-host handlers, marshalled as a JSON object
// whose keys keep insertion order (which decides among globs).
type ByHostView []chain.HostChoice

// MarshalJSON writes {host: {method, params}} in insertion order.
func (v ByHostView) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(e.Host)
		if err != nil {
			return nil, err
		}
		hv, err := json.Marshal(HandlerView{Method: e.Method, Params: e.Params})
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(hv)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads the object back in order. A null params reads back
// as none given: the view cannot tell the two apart.
func (v *ByHostView) UnmarshalJSON(data []byte) error {
	out := ByHostView{}
	err := decodeOrderedObject(data, func(key string, raw json.RawMessage) error {
		var hv HandlerView
		if err := json.Unmarshal(raw, &hv); err != nil {
			return fmt.Errorf("outboundByHost[%q]: %w", key, err)
		}
		if string(hv.Params) == "null" {
			hv.Params = nil
		}
		out = append(out, chain.HostChoice{Host: key, Choice: chain.Choice{Method: hv.Method, Params: hv.Params}})
		return nil
	})
	if err != nil {
		return err
	}
	*v = out
	return nil
}

// decodeOrderedObject calls fn for each member of a JSON object, in order.
func decodeOrderedObject(data []byte, fn func(key string, raw json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("want a JSON object, got %v", tok)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("value of %q: %w", key, err)
		}
		if err := fn(key, raw); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON object")
	}
	return nil
}

func viewOf(inst *Instance, pol *chain.ScriptPolicy) View {
	st := inst.state.Load()
	v := View{ID: inst.id, Class: inst.class, Home: st.home, Created: inst.created, OutboundByHost: ByHostView{}}
	for _, p := range inst.sources {
		v.Sources = append(v.Sources, p.String())
	}
	cls := pol.Class(inst.class)
	if cls == nil {
		v.ClassMissing = true
	} else {
		cfg := cls.Spec()
		v.EnableInternet, v.InterceptHTTPS = cfg.EnableInternet, cfg.InterceptHTTPS
		v.AllowedHosts, v.DeniedHosts = clone(cfg.AllowedHosts), clone(cfg.DeniedHosts)
	}
	if st.ov.AllowedHosts != nil {
		v.AllowedHosts = clone(st.ov.AllowedHosts)
	}
	if st.ov.DeniedHosts != nil {
		v.DeniedHosts = clone(st.ov.DeniedHosts)
	}
	has := func(m string) bool { return cls != nil && cls.HasHandler(m) }
	if o := st.ov.Outbound; o != nil {
		v.OutboundHandler = &HandlerView{Method: o.Method, Params: o.Params}
		if !has(o.Method) {
			v.Stale = append(v.Stale, StaleOverride{Override: "outboundHandler", Method: o.Method})
		}
	}
	for _, e := range st.ov.ByHost {
		v.OutboundByHost = append(v.OutboundByHost, e)
		if !has(e.Method) {
			v.Stale = append(v.Stale, StaleOverride{Override: "outboundByHost", Host: e.Host, Method: e.Method})
		}
	}
	return v
}

func clone(l []string) []string {
	if l == nil {
		return nil
	}
	return append(make([]string, 0, len(l)), l...)
}
