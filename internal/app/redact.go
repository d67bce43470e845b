package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/outbound-dev/outbound/jsapi"
)

// minRedactLen is the shortest env value redacted from logs: shorter ones
// ("1", "on") are flags, and replacing them would garble every line.
const minRedactLen = 4

// redactor scrubs env values from every log line, whoever writes it: a
// handler's exception text, console.log in a script, a fetch error naming
// a URL built with a secret. It sits under the one logger the server hands
// to every component, so no path can forget it.
type redactor struct {
	env      atomic.Pointer[func() *jsapi.Env] // set once the env source exists
	mu       sync.Mutex
	lastEnv  *jsapi.Env
	replacer *strings.Replacer // nil when there is nothing to redact
}

// replacerFor returns the replacer for the current env, rebuilt only when
// the env changes (envs are immutable, so the pointer says).
func (r *redactor) current() *strings.Replacer {
	src := r.env.Load()
	if src == nil {
		return nil
	}
	env := (*src)()
	r.mu.Lock()
	defer r.mu.Unlock()
	if env != r.lastEnv {
		r.lastEnv, r.replacer = env, nil
		var pairs []string
		if env != nil {
			for _, v := range env.Vars {
				if len(v) >= minRedactLen {
					pairs = append(pairs, v, "[redacted]")
				}
			}
		}
		if len(pairs) > 0 {
			r.replacer = strings.NewReplacer(pairs...)
		}
	}
	return r.replacer
}

// redact scrubs env values from s.
func (r *redactor) redact(s string) string {
	if rp := r.current(); rp != nil {
		return rp.Replace(s)
	}
	return s
}

type redactHandler struct {
	next slog.Handler
	r    *redactor
}

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	rp := h.r.current()
	if rp == nil {
		return h.next.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, rp.Replace(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(rp, a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if rp := h.r.current(); rp != nil {
		clean := make([]slog.Attr, len(as))
		for i, a := range as {
			clean[i] = redactAttr(rp, a)
		}
		as = clean
	}
	return redactHandler{next: h.next.WithAttrs(as), r: h.r}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{next: h.next.WithGroup(name), r: h.r}
}

func redactAttr(rp *strings.Replacer, a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, rp.Replace(v.String()))
	case slog.KindGroup:
		g := v.Group()
		clean := make([]any, len(g))
		for i, ga := range g {
			clean[i] = redactAttr(rp, ga)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, rp.Replace(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, rp.Replace(x.String()))
		default:
			return slog.String(a.Key, rp.Replace(fmt.Sprint(x)))
		}
	}
	return a
}
