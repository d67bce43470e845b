// Package events is the live event stream of a running outbound: one
// decision per request or tunnel, the handlers' console lines and script
// reloads, fanned out to whoever watches (GET /v1/events, the web page,
// `outbound ctl tail`). It owns the fan-out, the per-subscriber buffers and
// the Server-Sent Events encoding. It does not know how a request is decided
// or where a console line comes from: the proxy and the log publish here.
//
// Publishing never waits. Each subscriber has a bounded buffer; events for a
// subscriber that fell behind are dropped, counted, and announced on its
// stream. With nobody subscribed, a publisher pays one atomic load.
package events

import (
	"encoding/json"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Event kinds, as the SSE "event:" field names them.
const (
	KindDecision = "decision"
	KindConsole  = "console"
	KindReload   = "reload"
	// KindDropped tells a subscriber how many events it lost by falling
	// behind. The hub never publishes it; the stream writes it.
	KindDropped = "dropped"
)

// MaxConsole bounds a console message on the stream; the log keeps it whole.
const MaxConsole = 32 << 10

// DefaultBuffer is how many events a subscriber may have waiting before
// newer ones are dropped for it.
const DefaultBuffer = 1024

// Decision is one request or tunnel as it was decided. Path never carries
// the query string, which may hold secrets.
type Decision struct {
	Time     time.Time `json:"time"`
	Instance string    `json:"instance"` // "" when the request never authenticated
	Method   string    `json:"method"`
	Host     string    `json:"host"`
	Path     string    `json:"path"`
	Step     string    `json:"step"`
	// Blocked: refused by the policy or by the proxy itself, so nothing
	// went out. Failures on the way out (dial, handler) are not blocks.
	Blocked bool    `json:"blocked"`
	Status  int     `json:"status"`
	MS      float64 `json:"ms"`
	Handler *string `json:"handler"` // null when no handler ran
}

// Console is one console.* line of a handler.
type Console struct {
	Time     time.Time `json:"time"`
	Instance string    `json:"instance"`
	Class    string    `json:"class"`
	Level    string    `json:"level"` // debug, info, warn, error
	Message  string    `json:"message"`
}

// Reload is one script load attempt after the first. Generation is the new
// one, or on failure the one that keeps serving.
type Reload struct {
	Time       time.Time `json:"time"`
	Generation int       `json:"generation"`
	Error      *string   `json:"error"` // "file:line:col: message", null when it loaded
}

// Dropped is the data of a KindDropped event: how many events the
// subscriber lost since it was last told.
type Dropped struct {
	Dropped uint64 `json:"dropped"`
}

// Event is one published event, encoded once for all its subscribers.
type Event struct {
	Kind     string
	Instance string // what ?instance= filters on; "" for none
	Data     []byte // JSON
}

// Options configure a Hub.
type Options struct {
	// Buffer is each subscriber's queue length. Default DefaultBuffer.
	Buffer int
	// Redact scrubs text that may carry a secret (a host or path built from
	// an env value, a console message, an error). Nil leaves text as is.
	Redact func(string) string
}

// Hub fans events out to subscribers. The zero value is not usable; a nil
// *Hub is, and publishing to it does nothing.
type Hub struct {
	opts    Options
	mu      sync.Mutex                      // serialises changes to subs
	subs    atomic.Pointer[[]*Subscription] // copy on write: publishers never lock
	dropped atomic.Uint64
	done    chan struct{} // closed by Close: streams end
	closing sync.Once
}

// New returns a Hub with no subscribers.
func New(o Options) *Hub {
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.Redact == nil {
		o.Redact = func(s string) string { return s }
	}
	return &Hub{opts: o, done: make(chan struct{})}
}

// Close ends every stream ServeHTTP is serving, and any it is asked for
// later: a server shutting down would otherwise wait for watchers to hang
// up. Publishing still works, for subscribers of Subscribe.
func (h *Hub) Close() {
	h.closing.Do(func() { close(h.done) })
}

// Active reports whether anyone is subscribed. Publishers check it before
// building an event, so an unwatched hub costs one atomic load.
func (h *Hub) Active() bool {
	if h == nil {
		return false
	}
	p := h.subs.Load()
	return p != nil && len(*p) > 0
}

// Subscribers is how many subscribers there are now.
func (h *Hub) Subscribers() int {
	if p := h.subs.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// Dropped is how many events were dropped for subscribers that fell behind,
// in total since the hub started.
func (h *Hub) Dropped() uint64 { return h.dropped.Load() }

// Decision publishes a decision. Host, path and handler are redacted.
func (h *Hub) Decision(d Decision) {
	if !h.Active() {
		return
	}
	d.Host, d.Path = h.opts.Redact(d.Host), h.opts.Redact(d.Path)
	if d.Handler != nil {
		name := h.opts.Redact(*d.Handler)
		d.Handler = &name
	}
	d.MS = math.Round(d.MS*1000) / 1000
	h.publish(KindDecision, d.Instance, d)
}

// Console publishes a handler's console line, redacted.
func (h *Hub) Console(c Console) {
	if !h.Active() {
		return
	}
	c.Message = h.opts.Redact(c.Message)
	if len(c.Message) > MaxConsole {
		c.Message = strings.ToValidUTF8(c.Message[:MaxConsole], "") + "… (truncated)"
	}
	h.publish(KindConsole, c.Instance, c)
}

// Reload publishes a script load attempt: gen is the new generation, or on
// failure (err != nil) the one still serving.
func (h *Hub) Reload(gen int, err error) {
	if !h.Active() {
		return
	}
	r := Reload{Time: time.Now(), Generation: gen}
	if err != nil {
		msg := h.opts.Redact(err.Error())
		r.Error = &msg
	}
	h.publish(KindReload, "", r)
}

func (h *Hub) publish(kind, instance string, v any) {
	data, err := json.Marshal(v)
	if err != nil { // only plain strings, numbers and times: cannot fail
		return
	}
	ev := Event{Kind: kind, Instance: instance, Data: data}
	for _, s := range *h.subs.Load() {
		if !s.wants(ev) {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
			h.dropped.Add(1)
		}
	}
}

// Subscribe starts a subscription. instance limits decisions and console
// lines to that instance ("" for all); reloads reach every subscriber. The
// caller must Close it.
func (h *Hub) Subscribe(instance string) *Subscription {
	s := &Subscription{hub: h, instance: instance, ch: make(chan Event, h.opts.Buffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	var next []*Subscription
	if p := h.subs.Load(); p != nil {
		next = append(next, *p...)
	}
	next = append(next, s)
	h.subs.Store(&next)
	return s
}

// Subscription is one subscriber's queue.
type Subscription struct {
	hub      *Hub
	instance string
	ch       chan Event
	dropped  atomic.Uint64 // since the last TakeDropped
	once     sync.Once
}

func (s *Subscription) wants(ev Event) bool {
	return s.instance == "" || ev.Kind == KindReload || ev.Instance == s.instance
}

// Events is the subscriber's queue. It is never closed: stop reading when
// done and call Close.
func (s *Subscription) Events() <-chan Event { return s.ch }

// TakeDropped returns how many events were dropped for this subscriber
// since the last call, and resets the count.
func (s *Subscription) TakeDropped() uint64 { return s.dropped.Swap(0) }

// Close ends the subscription. Events already queued are discarded.
func (s *Subscription) Close() {
	s.once.Do(func() {
		h := s.hub
		h.mu.Lock()
		defer h.mu.Unlock()
		var next []*Subscription
		for _, o := range *h.subs.Load() {
			if o != s {
				next = append(next, o)
			}
		}
		h.subs.Store(&next)
	})
}
