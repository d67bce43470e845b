package jsapi

import (
	"log/slog"
	"strings"
	"time"

	"github.com/dop251/goja"
)

// timer is one setTimeout or setInterval. Timers belong to the invocation
// that created them: End clears what is left, so a handler's stray interval
// never runs into the next request. A timer counts as pending work of its
// scope until it has fired (setTimeout) or is cleared.
type timer struct {
	id    int64
	s     *Scope
	t     *time.Timer
	fn    goja.Callable
	args  []goja.Value
	every time.Duration // 0 for setTimeout
	done  bool          // fired or cleared; loop-owned
}

// stop cancels the timer. A fire already queued on the loop sees done.
func (t *timer) stop() {
	t.done = true
	t.t.Stop()
}

// fire runs on the loop, in t's scope.
func (r *Realm) fire(t *timer) {
	if t.done {
		return
	}
	if t.every == 0 {
		t.done = true
		t.s.pending--
		delete(t.s.timers, t.id)
	}
	if _, err := t.fn(goja.Undefined(), t.args...); err != nil {
		if ex, ok := err.(*goja.Exception); ok {
			r.logUncaught(ex.Value())
		} else {
			r.uncatchable(err)
			return
		}
	}
	if t.every > 0 && !t.done {
		t.t.Reset(t.every)
	}
}

func (r *Realm) installTimers() {
	g := r.vm.GlobalObject()
	var nextID int64
	schedule := func(call goja.FunctionCall, repeat bool) goja.Value {
		fn, ok := goja.AssertFunction(call.Argument(0))
		if !ok {
			r.throwType("%s: callback is not a function", map[bool]string{false: "setTimeout", true: "setInterval"}[repeat])
		}
		d := time.Duration(max(call.Argument(1).ToInteger(), 0)) * time.Millisecond
		var args []goja.Value
		if len(call.Arguments) > 2 {
			args = append(args, call.Arguments[2:]...)
		}
		s := r.curScope()
		nextID++
		if s.ended {
			return r.vm.ToValue(nextID) // never fires: its invocation is over
		}
		t := &timer{id: nextID, s: s, fn: fn, args: args}
		if repeat {
			// As Node does: an interval of 0 would spin.
			t.every = max(d, time.Millisecond)
			d = t.every
		}
		s.pending++
		if s.timers == nil {
			s.timers = make(map[int64]*timer)
		}
		s.timers[t.id] = t
		t.t = time.AfterFunc(d, func() { r.post(s, func() { r.fire(t) }, nil) })
		return r.vm.ToValue(t.id)
	}
	clear := func(call goja.FunctionCall) goja.Value {
		s := r.scope
		if s == nil {
			return goja.Undefined()
		}
		id := call.Argument(0).ToInteger()
		if t, ok := s.timers[id]; ok {
			delete(s.timers, id)
			if !t.done {
				s.pending--
			}
			t.stop()
		}
		return goja.Undefined()
	}
	_ = g.Set("setTimeout", func(call goja.FunctionCall) goja.Value { return schedule(call, false) })
	_ = g.Set("setInterval", func(call goja.FunctionCall) goja.Value { return schedule(call, true) })
	_ = g.Set("clearTimeout", clear)
	_ = g.Set("clearInterval", clear)
}

func (r *Realm) installConsole() {
	c := r.vm.NewObject()
	logAt := func(level slog.Level) func(goja.FunctionCall) goja.Value {
		return func(call goja.FunctionCall) goja.Value {
			s := r.curScope()
			msg := r.format(call.Arguments)
			s.log(level, msg)
			return goja.Undefined()
		}
	}
	_ = c.Set("log", logAt(slog.LevelInfo))
	_ = c.Set("info", logAt(slog.LevelInfo))
	_ = c.Set("debug", logAt(slog.LevelDebug))
	_ = c.Set("trace", logAt(slog.LevelDebug))
	_ = c.Set("warn", logAt(slog.LevelWarn))
	_ = c.Set("error", logAt(slog.LevelError))
	_ = r.vm.GlobalObject().DefineDataProperty("console", c, goja.FLAG_TRUE, goja.FLAG_TRUE, goja.FLAG_FALSE)
}

func (s *Scope) log(level slog.Level, msg string) {
	ctx := s.ctx
	if s.instance != "" || s.class != "" {
		s.logger.Log(ctx, level, msg, "source", "console", "instance", s.instance, "class", s.class)
		return
	}
	s.logger.Log(ctx, level, msg, "source", "console")
}

// ConsoleAttrs reports whether rec is a handler's console line, as
// Scope.log writes it, with its instance and class ("" when unnamed).
// Log handlers read console lines with it, not by the attribute names.
func ConsoleAttrs(rec slog.Record) (instance, class string, ok bool) {
	rec.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "source":
			ok = a.Value.Kind() == slog.KindString && a.Value.String() == "console"
		case "instance":
			instance = a.Value.String()
		case "class":
			class = a.Value.String()
		}
		return true
	})
	return instance, class, ok
}

// logUncaught reports an exception nobody caught (in a timer, a listener or a
// microtask).
func (r *Realm) logUncaught(v goja.Value) {
	r.curScope().log(slog.LevelError, "uncaught exception: "+r.format([]goja.Value{v}))
}

// format renders console arguments the way a terminal would: strings as
// they are, errors with their stack, everything else as JSON when it can be.
func (r *Realm) format(args []goja.Value) string {
	var sb strings.Builder
	for i, a := range args {
		if i > 0 {
			sb.WriteByte(' ')
		}
		switch {
		case a == nil || goja.IsUndefined(a):
			sb.WriteString("undefined")
		case goja.IsNull(a):
			sb.WriteString("null")
		default:
			if o, ok := a.(*goja.Object); ok {
				if o.ClassName() == "Error" {
					if st := o.Get("stack"); st != nil && !goja.IsUndefined(st) {
						sb.WriteString(st.String())
					} else {
						sb.WriteString(o.String())
					}
					continue
				}
				if _, isFn := goja.AssertFunction(o); !isFn {
					var s string
					if ex := r.vm.Try(func() { s = r.stringify(o) }); ex == nil {
						sb.WriteString(s)
						continue
					}
				}
			}
			sb.WriteString(a.String())
		}
	}
	return sb.String()
}
