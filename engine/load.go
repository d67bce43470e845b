package engine

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dop251/goja"
	"github.com/evanw/esbuild/pkg/api"
	"github.com/go-sourcemap/sourcemap"

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
	info   *ScriptInfo
	prg    *goja.Program
	bundle string
	smap   *sourcemap.Consumer
	dir    string // where source paths in the map are relative to
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

const (
	bundleGlobal = "__outbound_module"
	shimNS       = "outbound-shim"
)

// Load bundles the script at path with esbuild (TypeScript, relative imports,
// the Cloudflare shim modules), compiles it, and evaluates it once in a
// scratch runtime to read each class's configuration.
func Load(ctx context.Context, path string, opts LoadOptions) (*Program, error) {
	if opts.EvalTimeout <= 0 {
		opts.EvalTimeout = DefaultEvalTimeout
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("load script %s: %w", path, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("load script: %w", err)
	}
	dir := filepath.Dir(abs)
	outfile := filepath.Join(dir, "outbound-bundle.js")
	res := api.Build(api.BuildOptions{
		EntryPoints:    []string{abs},
		Bundle:         true,
		Write:          false,
		Format:         api.FormatIIFE,
		GlobalName:     bundleGlobal,
		Target:         api.ES2022,
		Supported:      map[string]bool{"async-generator": false, "for-await": false},
		Sourcemap:      api.SourceMapInline,
		SourcesContent: api.SourcesContentExclude,
		Platform:       api.PlatformNeutral,
		MainFields:     []string{"module", "main"},
		Conditions:     []string{"workerd", "worker", "import"},
		Metafile:       true,
		Outfile:        outfile,
		AbsWorkingDir:  dir,
		LogLevel:       api.LogLevelSilent,
		Charset:        api.CharsetUTF8,
		Plugins:        []api.Plugin{shimPlugin()},
	})
	if len(res.Errors) > 0 {
		return nil, esbuildError(dir, abs, res.Errors[0])
	}
	if len(res.OutputFiles) != 1 {
		return nil, fmt.Errorf("load script %s: esbuild produced %d files, want 1", abs, len(res.OutputFiles))
	}
	src := string(res.OutputFiles[0].Contents)
	p := &Program{bundle: src, dir: dir}
	p.smap = parseInlineMap(outfile, src)
	p.info = &ScriptInfo{Path: abs, Inputs: metafileInputs(dir, res.Metafile)}

	prg, err := goja.Compile(outfile, src, false)
	if err != nil {
		return nil, p.compileError(abs, err)
	}
	p.prg = prg
	if err := p.describe(ctx, opts.EvalTimeout); err != nil {
		return nil, err
	}
	return p, nil
}

func shimPlugin() api.Plugin {
	return api.Plugin{
		Name: "outbound-cloudflare-shims",
		Setup: func(b api.PluginBuild) {
			b.OnResolve(api.OnResolveOptions{Filter: `^(@cloudflare/(containers|sandbox)|outbound:base)$`},
				func(args api.OnResolveArgs) (api.OnResolveResult, error) {
					return api.OnResolveResult{Path: args.Path, Namespace: shimNS}, nil
				})
			b.OnLoad(api.OnLoadOptions{Filter: `.*`, Namespace: shimNS},
				func(args api.OnLoadArgs) (api.OnLoadResult, error) {
					name := map[string]string{
						"@cloudflare/containers": "shim/containers.js",
						"@cloudflare/sandbox":    "shim/sandbox.js",
						"outbound:base":          "shim/base.js",
					}[args.Path]
					src := mustRead(name)
					return api.OnLoadResult{Contents: &src, Loader: api.LoaderJS}, nil
				})
		},
	}
}

func esbuildError(dir, entry string, m api.Message) error {
	if m.Location == nil {
		return &ScriptError{File: entry, Line: 1, Col: 1, Msg: m.Text}
	}
	file := m.Location.File
	if m.Location.Namespace == "" || m.Location.Namespace == "file" {
		if !filepath.IsAbs(file) {
			file = filepath.Join(dir, file)
		}
	}
	return &ScriptError{File: file, Line: m.Location.Line, Col: m.Location.Column + 1, Msg: m.Text}
}

func metafileInputs(dir, meta string) []string {
	var mf struct {
		Inputs map[string]json.RawMessage `json:"inputs"`
	}
	if err := json.Unmarshal([]byte(meta), &mf); err != nil {
		return nil
	}
	var out []string
	for k := range mf.Inputs {
		if strings.Contains(k, ":") && !filepath.IsAbs(k) {
			continue // a plugin namespace, e.g. outbound-shim:@cloudflare/sandbox
		}
		if !filepath.IsAbs(k) {
			k = filepath.Join(dir, k)
		}
		out = append(out, filepath.Clean(k))
	}
	sort.Strings(out)
	return out
}

func parseInlineMap(outfile, src string) *sourcemap.Consumer {
	const marker = "//# sourceMappingURL=data:application/json;base64,"
	i := strings.LastIndex(src, marker)
	if i < 0 {
		return nil
	}
	data := strings.TrimSpace(src[i+len(marker):])
	b, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return nil
	}
	c, err := sourcemap.Parse(outfile, b)
	if err != nil {
		return nil
	}
	return c
}

// original maps a 1-based line and column of the bundle to the user's file.
func (p *Program) original(line, col int) (file string, l, c int, ok bool) {
	if p.smap == nil {
		return "", 0, 0, false
	}
	src, _, l, c, ok := p.smap.Source(line, col-1)
	if !ok || src == "" {
		return "", 0, 0, false
	}
	return p.sourcePath(src), l, c + 1, true
}

// sourcePath turns a source map source (relative to the bundle) into a path.
func (p *Program) sourcePath(src string) string {
	src = strings.TrimPrefix(src, "file://")
	if strings.HasPrefix(src, shimNS+":") {
		return src
	}
	if !filepath.IsAbs(src) {
		src = filepath.Join(p.dir, src)
	}
	return filepath.Clean(src)
}

func (p *Program) compileError(entry string, err error) error {
	var ce *goja.CompilerSyntaxError
	if errors.As(err, &ce) && ce.File != nil {
		pos := ce.File.Position(ce.Offset)
		if f, l, c, ok := p.original(pos.Line, pos.Column); ok {
			return &ScriptError{File: f, Line: l, Col: c, Msg: ce.Message}
		}
	}
	return &ScriptError{File: entry, Line: 1, Col: 1, Msg: "compile: " + err.Error()}
}

// exceptionError locates a JS exception in the user's source: the innermost
// stack frame in a user file.
func (p *Program) exceptionError(entry string, ex *goja.Exception) *ScriptError {
	msg := exceptionMessage(ex)
	for _, f := range ex.Stack() {
		pos := f.Position()
		if pos.Line <= 0 || strings.HasPrefix(pos.Filename, "outbound:") || strings.Contains(pos.Filename, shimNS) {
			continue
		}
		return &ScriptError{File: p.sourcePath(pos.Filename), Line: pos.Line, Col: pos.Column + colFix, Msg: msg}
	}
	return &ScriptError{File: entry, Line: 1, Col: 1, Msg: msg}
}

// colFix corrects goja's source-mapped columns, which come out 0-based.
const colFix = 1

// exceptionMessage is what an exception says, without the stack.
func exceptionMessage(ex *goja.Exception) string {
	v := ex.Value()
	if o, ok := v.(*goja.Object); ok {
		name, msg := o.Get("name"), o.Get("message")
		if msg != nil && !goja.IsUndefined(msg) {
			n := "Error"
			if name != nil && !goja.IsUndefined(name) {
				n = name.String()
			}
			return n + ": " + msg.String()
		}
	}
	if v == nil {
		return ex.Error()
	}
	return v.String()
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
	iso, configs, err := newIsolate(p, jsapi.Config{Fetch: noFetch{}, Logger: slog.New(slog.DiscardHandler)}, timeout)
	if err != nil {
		return err
	}
	iso.retire()
	iso.start(func() {})
	<-iso.ended
	p.info.Classes = configs
	p.info.HasBlocked = iso.blocked != nil
	return nil
}
