package engine

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/jsapi"
)

//go:embed shim/*.js introspect.js
var embedded embed.FS

// introspect is compiled once per process; it runs in every runtime to find
// the module's classes.
var introspect = goja.MustCompile("outbound:introspect.js", mustRead("introspect.js"), true)

func mustRead(name string) string {
	b, err := embedded.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// DefaultEvalTimeout bounds a module's top-level evaluation at load.
const DefaultEvalTimeout = 5 * time.Second

// LoadOptions tunes Load.
type LoadOptions struct {
	// EvalTimeout bounds the module's top-level code while Load evaluates it
	// to read the classes. Zero means DefaultEvalTimeout.
	EvalTimeout time.Duration
}

// Program is a loaded script: bundled, compiled once, and described. It is
// immutable and shared by every runtime of every pool made from it.
type Program struct {
	info *ScriptInfo
	prg  *goja.Program
	b    *Bundle
}

// Info describes the script's classes. The caller must not modify it.
func (p *Program) Info() *ScriptInfo { return p.info }

// ScriptError is a script problem (syntax, a bad import, an exception at
// module evaluation, invalid configuration) in the user's source coordinates.
type ScriptError struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *ScriptError) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

const bundleGlobal = "__outbound_module"

// Load bundles the script at path with esbuild (TypeScript, relative imports,
// the Cloudflare shim modules), compiles it, and evaluates it once in a
// scratch runtime to read each class's configuration.
func Load(ctx context.Context, path string, opts LoadOptions) (*Program, error) {
	if opts.EvalTimeout <= 0 {
		opts.EvalTimeout = DefaultEvalTimeout
	}
	b, err := BundleFile(path, BundleOptions{})
	if err != nil {
		return nil, err
	}
	p := &Program{b: b}
	p.info = &ScriptInfo{Path: b.Path, Inputs: b.Inputs}
	if p.prg, err = b.Compile(); err != nil {
		return nil, err
	}
	if err := p.describe(ctx, opts.EvalTimeout); err != nil {
		return nil, err
	}
	return p, nil
}

// exceptionError locates a JS exception in the user's source.
func (p *Program) exceptionError(ex *goja.Exception) *ScriptError {
	return p.b.Locate(ex)
}

// original maps a 1-based line and column of the bundle to the user's file.
func (p *Program) original(line, col int) (file string, l, c int, ok bool) {
	return p.b.original(line, col)
}

// noFetch is the transport of the scratch runtime Load evaluates in.
type noFetch struct{}

func (noFetch) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("fetch is not available while the script loads")
}

// describe evaluates the module once in a scratch runtime and fills p.info.
func (p *Program) describe(ctx context.Context, timeout time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	iso, configs, err := newIsolate(p, jsapi.Config{Fetch: noFetch{}, Logger: slog.New(slog.DiscardHandler)}, timeout, nil)
	if err != nil {
		return err
	}
	iso.realm.Wait() // module-scope fetches, cancelled when it ended
	p.info.Classes = configs
	p.info.HasBlocked = iso.blocked != nil
	return nil
}
