package chain

import (
	"encoding/json"
	"fmt"

	"github.com/outbound-dev/outbound/handlers/hostmatch"
)

// Choice is a handler picked at runtime: a name in outboundHandlers and the
// params it gets as ctx.params. Params nil means none were given.
type Choice struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"` // absent: none given; null: null given
}

// HostChoice is one setOutboundByHost entry. Host is the normalised pattern.
type HostChoice struct {
	Host string `json:"host"`
	Choice
}

// Overrides is an instance's runtime overrides as set and persisted. A nil
// list means "not overridden": the class's list applies. An empty, non-nil
// list is set and empty (it blocks every host, for AllowedHosts).
type Overrides struct {
	AllowedHosts []string     `json:"allowedHosts"`
	DeniedHosts  []string     `json:"deniedHosts"`
	Outbound     *Choice      `json:"outboundHandler"`
	ByHost       []HostChoice `json:"outboundByHost"` // insertion order
}

// IsZero reports whether nothing is overridden.
func (o *Overrides) IsZero() bool {
	return o.AllowedHosts == nil && o.DeniedHosts == nil && o.Outbound == nil && len(o.ByHost) == 0
}

// Clone returns a deep copy, so a method can edit it copy-on-write.
func (o *Overrides) Clone() Overrides {
	c := Overrides{
		AllowedHosts: cloneList(o.AllowedHosts),
		DeniedHosts:  cloneList(o.DeniedHosts),
	}
	if o.Outbound != nil {
		ch := *o.Outbound
		c.Outbound = &ch
	}
	if o.ByHost != nil {
		c.ByHost = append([]HostChoice(nil), o.ByHost...)
	}
	return c
}

func cloneList(l []string) []string {
	if l == nil {
		return nil
	}
	return append(make([]string, 0, len(l)), l...)
}

// Runtime is Overrides compiled for Decide. Immutable.
type Runtime struct {
	allowed  *hostmatch.List
	denied   *hostmatch.List
	byHost   hostmatch.Table[*Choice]
	outbound *Choice
}

// CompileOverrides validates and compiles o. An error names the pattern.
func CompileOverrides(o Overrides) (*Runtime, error) {
	rt := &Runtime{}
	var err error
	if o.AllowedHosts != nil {
		if rt.allowed, err = hostmatch.Compile(o.AllowedHosts); err != nil {
			return nil, fmt.Errorf("allowedHosts: %w", err)
		}
	}
	if o.DeniedHosts != nil {
		if rt.denied, err = hostmatch.Compile(o.DeniedHosts); err != nil {
			return nil, fmt.Errorf("deniedHosts: %w", err)
		}
	}
	for i := range o.ByHost {
		c := o.ByHost[i].Choice
		if _, err := rt.byHost.Add(o.ByHost[i].Host, &c); err != nil {
			return nil, fmt.Errorf("outboundByHost: %w", err)
		}
	}
	if o.Outbound != nil {
		c := *o.Outbound
		rt.outbound = &c
	}
	return rt, nil
}
