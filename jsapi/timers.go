package jsapi

import (
	"log/slog"
	"strings"
	"time"

	"github.com/dop251/goja"
	"github.com/dop251/goja_nodejs/eventloop"
)

// timer is one setTimeout or setInterval. Timers belong to the invocation
// that created them: Realm.End clears what is left, so a handler's stray
// interval never runs into the next request.
type timer struct {
	id    int64
	scope *Scope
	once  *eventloop.Timer
	every *eventloop.Interval
}

func (t *timer) stop(r *Realm) {
	if t.once != nil {
		r.loop.ClearTimeout(t.once)
	}
	if t.every != nil {
		r.loop.ClearInterval(t.every)
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
		d := call.Argument(1).ToInteger()
		if d < 0 {
			d = 0
		}
		var args []goja.Value
		if len(call.Arguments) > 2 {
			args = append(args, call.Arguments[2:]...)
		}
		s := r.curScope()
		nextID++
		t := &timer{id: nextID, scope: s}
		run := func(vm *goja.Runtime) {
			if s.ended {
				return
			}
			if !repeat {
				delete(s.timers, t.id)
			}
			if _, err := fn(goja.Undefined(), args...); err != nil {
				if ex, ok := err.(*goja.Exception); ok {
					r.logUncaught(ex.Value())
					return
				}
				// Uncatchable (interrupt, stack overflow): the runtime is done for.
				r.uncatchable(err)
			}
		}
		if repeat {
			t.every = r.loop.SetInterval(run, time.Duration(d)*time.Millisecond)
		} else {
			t.once = r.loop.SetTimeout(run, time.Duration(d)*time.Millisecond)
		}
		if s.timers == nil {
			s.timers = make(map[int64]*timer)
		}
		s.timers[t.id] = t
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
			t.stop(r)
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
