package engine

// Reading a script's classes: what introspect.js reports, validated into
// the chain's ClassSpec and the handler tables each runtime calls.

import (
	"fmt"
	"sort"
	"strings"

	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/jsapi"
)

// handler is a resolved JS handler and the this it is called with.
type handler struct {
	fn   goja.Callable
	this goja.Value
}

// classTable is one class's handlers inside one runtime.
type classTable struct {
	outbound *handler
	byHost   map[string]*handler
	named    map[string]*handler
	blocked  *handler // the class's own hook; nil falls back to the module's
}

// rawClass is what introspect.js reports about a class, not yet validated.
type rawClass struct {
	name     string
	source   string
	obj      *goja.Object
	self     goja.Value
	defOrder int
}

// readBlocked reads the module's named export blocked, the hook of every
// class that has none of its own.
func (iso *isolate) readBlocked(desc, mod *goja.Object) error {
	v := desc.Get("blocked")
	if !isSet(v) {
		return nil
	}
	fn, ok := goja.AssertFunction(v)
	if !ok {
		p := iso.prog
		return &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: "export blocked must be a function, got " + jsapi.Describe(v)}
	}
	iso.blocked = &handler{fn: fn, this: mod}
	return nil
}

// blockedHook is the hook that builds a block response for class: its
// own, else the module's.
func (iso *isolate) blockedHook(class string) (*handler, error) {
	if tab := iso.classes[class]; tab != nil && tab.blocked != nil {
		return tab.blocked, nil
	}
	if iso.blocked == nil {
		return nil, &HandlerError{Msg: fmt.Sprintf("class %s has no blocked hook and the script does not export one", class)}
	}
	return iso.blocked, nil
}

func isSet(v goja.Value) bool { return v != nil && !goja.IsUndefined(v) && !goja.IsNull(v) }

// readClasses validates introspect.js's report and builds the handler
// tables. The module's blocked export is read first (readBlocked).
func (iso *isolate) readClasses(desc *goja.Object) ([]chain.ClassSpec, error) {
	vm := iso.vm
	p := iso.prog
	arr := desc.Get("classes").ToObject(vm)
	n := int(arr.Get("length").ToInteger())
	raws := make([]rawClass, 0, n)
	for i := 0; i < n; i++ {
		o := arr.Get(fmt.Sprint(i)).ToObject(vm)
		rc := rawClass{name: o.Get("name").String(), obj: o, self: o.Get("self"), defOrder: -1}
		if s := o.Get("source"); s != nil && !goja.IsUndefined(s) {
			rc.source = s.String()
		}
		if rc.source != "" {
			rc.defOrder = p.classOffset(rc.name, rc.source)
		}
		raws = append(raws, rc)
	}
	sort.SliceStable(raws, func(i, j int) bool { return raws[i].defOrder < raws[j].defOrder })

	iso.classes = make(map[string]*classTable, len(raws))
	configs := make([]chain.ClassSpec, 0, len(raws))
	for _, rc := range raws {
		cfg, tab, err := iso.readClass(rc)
		if err != nil {
			return nil, err
		}
		if _, dup := iso.classes[cfg.Name]; dup {
			return nil, iso.classError(rc, fmt.Sprintf("class %s is defined twice", cfg.Name))
		}
		iso.classes[cfg.Name] = tab
		configs = append(configs, cfg)
	}
	return configs, nil
}

// classOffset finds where a class is defined in the bundle, for definition
// order and error positions. Anonymous class expressions can share their
// text (class extends Container {}), so the binding name is tried first.
func (p *Program) classOffset(name, source string) int {
	for _, pat := range []string{"var " + name + " = " + source, "let " + name + " = " + source, "class " + name + " "} {
		if i := strings.Index(p.b.Source, pat); i >= 0 {
			return i + strings.Index(pat, "class")
		}
	}
	return strings.Index(p.b.Source, source)
}

func (iso *isolate) classError(rc rawClass, msg string) error {
	p := iso.prog
	if rc.defOrder >= 0 {
		line := 1 + strings.Count(p.b.Source[:rc.defOrder], "\n")
		col := rc.defOrder - strings.LastIndex(p.b.Source[:rc.defOrder], "\n")
		if f, l, c, ok := p.original(line, col); ok {
			return &ScriptError{File: f, Line: l, Col: c, Msg: msg}
		}
	}
	return &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: msg}
}

func (iso *isolate) readClass(rc rawClass) (chain.ClassSpec, *classTable, error) {
	o := rc.obj
	cfg := chain.ClassSpec{Name: rc.name, EnableInternet: true}
	tab := &classTable{}
	fail := func(format string, args ...any) (chain.ClassSpec, *classTable, error) {
		return chain.ClassSpec{}, nil, iso.classError(rc, fmt.Sprintf("class %s: ", rc.name)+fmt.Sprintf(format, args...))
	}
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"enableInternet", &cfg.EnableInternet}, {"interceptHttps", &cfg.InterceptHTTPS}} {
		v := o.Get(b.name)
		if !isSet(v) {
			continue
		}
		bv, ok := v.Export().(bool)
		if !ok {
			return fail("%s must be a boolean, got %s", b.name, jsapi.Describe(v))
		}
		*b.dst = bv
	}
	for _, l := range []struct {
		name string
		dst  *[]string
	}{{"allowedHosts", &cfg.AllowedHosts}, {"deniedHosts", &cfg.DeniedHosts}} {
		v := o.Get(l.name)
		if !isSet(v) {
			continue
		}
		lo, ok := v.(*goja.Object)
		if !ok || lo.ClassName() != "Array" {
			return fail("%s must be an array of strings, got %s", l.name, jsapi.Describe(v))
		}
		n := int(lo.Get("length").ToInteger())
		list := make([]string, 0, n)
		for i := 0; i < n; i++ {
			e := lo.Get(fmt.Sprint(i))
			s, ok := e.(goja.String)
			if !ok {
				if _, isStr := e.Export().(string); !isStr {
					return fail("%s[%d] must be a string, got %s", l.name, i, jsapi.Describe(e))
				}
				list = append(list, e.String())
				continue
			}
			list = append(list, s.String())
		}
		*l.dst = list
	}
	if v := o.Get("outbound"); isSet(v) {
		fn, ok := goja.AssertFunction(v)
		if !ok {
			return fail("outbound must be a function, got %s", jsapi.Describe(v))
		}
		tab.outbound = &handler{fn: fn, this: rc.self}
		cfg.HasOutbound = true
	}
	if v := o.Get("outboundByHost"); isSet(v) {
		bo, ok := v.(*goja.Object)
		if !ok {
			return fail("outboundByHost must be an object, got %s", jsapi.Describe(v))
		}
		tab.byHost = make(map[string]*handler)
		for _, k := range bo.Keys() {
			fn, ok := goja.AssertFunction(bo.Get(k))
			if !ok {
				return fail("outboundByHost[%q] must be a function, got %s", k, jsapi.Describe(bo.Get(k)))
			}
			tab.byHost[k] = &handler{fn: fn, this: bo}
			cfg.ByHostKeys = append(cfg.ByHostKeys, k)
		}
	}
	if v := o.Get("outboundHandlers"); isSet(v) {
		ho, ok := v.(*goja.Object)
		if !ok {
			return fail("outboundHandlers must be an object, got %s", jsapi.Describe(v))
		}
		tab.named = make(map[string]*handler)
		for _, k := range ho.Keys() {
			fn, ok := goja.AssertFunction(ho.Get(k))
			if !ok {
				return fail("outboundHandlers[%q] must be a function, got %s", k, jsapi.Describe(ho.Get(k)))
			}
			tab.named[k] = &handler{fn: fn, this: ho}
			cfg.Handlers = append(cfg.Handlers, k)
		}
		sort.Strings(cfg.Handlers)
	}
	if v := o.Get("blocked"); isSet(v) {
		fn, ok := goja.AssertFunction(v)
		if !ok {
			return fail("blocked must be a function, got %s", jsapi.Describe(v))
		}
		tab.blocked = &handler{fn: fn, this: rc.self}
	}
	cfg.HasBlocked = tab.blocked != nil || iso.blocked != nil
	return cfg, tab, nil
}
