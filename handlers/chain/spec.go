package chain

// ClassSpec is one class's static policy as its script declares it: the
// lists, the flags and the names of its handlers. The engine reads it from
// the script once per generation, so the chain never enters JS to decide.
type ClassSpec struct {
	Name           string
	EnableInternet bool     // default true
	InterceptHTTPS bool     // default false
	AllowedHosts   []string // nil when the class does not set it
	DeniedHosts    []string // nil when the class does not set it
	ByHostKeys     []string // outboundByHost keys, in insertion order
	Handlers       []string // outboundHandlers names, sorted
	HasOutbound    bool     // a static outbound (or outboundProxy) exists
	// HasBlocked: a blocked hook builds this class's block responses, its
	// own (static blocked, or the default export's blocked) or else the
	// module's named export.
	HasBlocked bool
}

// HandlerKind says which of a class's handlers a decision runs.
type HandlerKind uint8

const (
	HandlerOutbound HandlerKind = iota // the static catch-all
	HandlerByHost                      // outboundByHost[Key]
	HandlerNamed                       // outboundHandlers[Key], picked at runtime
	HandlerBlocked                     // the script's blocked hook
)

// HandlerRef names one handler of a class.
type HandlerRef struct {
	Kind HandlerKind
	Key  string // outboundByHost key or outboundHandlers name
}

// String is the handler's name as logs, metrics and events show it.
func (r HandlerRef) String() string {
	switch r.Kind {
	case HandlerOutbound:
		return "outbound"
	case HandlerByHost:
		return "outboundByHost[" + r.Key + "]"
	case HandlerBlocked:
		return "blocked"
	default:
		return r.Key
	}
}
