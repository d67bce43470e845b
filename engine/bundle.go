package engine

// Bundling: esbuild turns a script and its imports (TypeScript, relative
// files, the shim modules) into one IIFE with an inline source map, and
// errors and stack frames are mapped back to the user's files.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/dop251/goja"
	"github.com/evanw/esbuild/pkg/api"
	"github.com/go-sourcemap/sourcemap"
)

// shimNS is the esbuild namespace of virtual modules; stack frames in them
// have file names that start with it.
const shimNS = "outbound-shim"

// builtinModules are the virtual modules every script may import.
var builtinModules = map[string]string{
	"@cloudflare/containers": "shim/containers.js",
	"@cloudflare/sandbox":    "shim/sandbox.js",
	"outbound:base":          "shim/base.js",
}

// BundleOptions tunes BundleFile.
type BundleOptions struct {
	// Modules are extra virtual modules the script may import by name
	// (such as "outbound:test"), with their JavaScript source.
	Modules map[string]string
}

// Bundle is a script and everything it imports, bundled the way a policy
// script is: one IIFE that assigns the module's exports to a global, with an
// inline source map.
type Bundle struct {
	Path   string   // the entry point, absolute
	Name   string   // the bundle's file name, as goja and stack traces name it
	Source string   // the bundled JavaScript
	Inputs []string // absolute paths of every file in the bundle
	dir    string   // where source paths in the map are relative to
	smap   *sourcemap.Consumer
}

// IsVirtual reports whether a stack frame's file name is a virtual module
// (a shim) rather than a file of the user's.
func IsVirtual(file string) bool {
	return strings.HasPrefix(file, "outbound:") || strings.Contains(file, shimNS)
}

// BundleFile bundles the script at path with esbuild. An error in the
// user's code is a *ScriptError.
func BundleFile(path string, opts BundleOptions) (*Bundle, error) {
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
		Plugins:        []api.Plugin{shimPlugin(opts.Modules)},
	})
	if len(res.Errors) > 0 {
		return nil, esbuildError(dir, abs, res.Errors[0])
	}
	if len(res.OutputFiles) != 1 {
		return nil, fmt.Errorf("load script %s: esbuild produced %d files, want 1", abs, len(res.OutputFiles))
	}
	src := string(res.OutputFiles[0].Contents)
	return &Bundle{
		Path:   abs,
		Name:   outfile,
		Source: src,
		Inputs: metafileInputs(dir, res.Metafile),
		dir:    dir,
		smap:   parseInlineMap(outfile, src),
	}, nil
}

// Compile compiles the bundle for goja. A syntax error is a *ScriptError in
// the user's coordinates.
func (b *Bundle) Compile() (*goja.Program, error) {
	prg, err := goja.Compile(b.Name, b.Source, false)
	if err != nil {
		return nil, b.compileError(err)
	}
	return prg, nil
}

func shimPlugin(extra map[string]string) api.Plugin {
	names := make([]string, 0, len(builtinModules)+len(extra))
	for n := range builtinModules {
		names = append(names, regexp.QuoteMeta(n))
	}
	for n := range extra {
		names = append(names, regexp.QuoteMeta(n))
	}
	sort.Strings(names)
	filter := "^(" + strings.Join(names, "|") + ")$"
	return api.Plugin{
		Name: "outbound-cloudflare-shims",
		Setup: func(pb api.PluginBuild) {
			pb.OnResolve(api.OnResolveOptions{Filter: filter},
				func(args api.OnResolveArgs) (api.OnResolveResult, error) {
					return api.OnResolveResult{Path: args.Path, Namespace: shimNS}, nil
				})
			pb.OnLoad(api.OnLoadOptions{Filter: `.*`, Namespace: shimNS},
				func(args api.OnLoadArgs) (api.OnLoadResult, error) {
					var src string
					if name, ok := builtinModules[args.Path]; ok {
						src = mustRead(name)
					} else if s, ok := extra[args.Path]; ok {
						src = s
					} else {
						return api.OnLoadResult{}, fmt.Errorf("no virtual module %q", args.Path)
					}
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
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return nil
	}
	c, err := sourcemap.Parse(outfile, raw)
	if err != nil {
		return nil
	}
	return c
}

// original maps a 1-based line and column of the bundle to the user's file.
func (b *Bundle) original(line, col int) (file string, l, c int, ok bool) {
	if b.smap == nil {
		return "", 0, 0, false
	}
	src, _, l, c, ok := b.smap.Source(line, col-1)
	if !ok || src == "" {
		return "", 0, 0, false
	}
	return b.SourcePath(src), l, c + 1, true
}

// SourcePath turns a file name of a stack frame (a source map source,
// relative to the bundle) into a path; virtual modules keep their name.
func (b *Bundle) SourcePath(src string) string {
	src = strings.TrimPrefix(src, "file://")
	if strings.HasPrefix(src, shimNS+":") {
		return src
	}
	if !filepath.IsAbs(src) {
		src = filepath.Join(b.dir, src)
	}
	return filepath.Clean(src)
}

func (b *Bundle) compileError(err error) error {
	var ce *goja.CompilerSyntaxError
	if errors.As(err, &ce) && ce.File != nil {
		pos := ce.File.Position(ce.Offset)
		if f, l, c, ok := b.original(pos.Line, pos.Column); ok {
			return &ScriptError{File: f, Line: l, Col: c, Msg: ce.Message}
		}
	}
	return &ScriptError{File: b.Path, Line: 1, Col: 1, Msg: "compile: " + err.Error()}
}

// Locate places a JS exception in the user's source: the innermost stack
// frame in a user file, else the entry point.
func (b *Bundle) Locate(ex *goja.Exception) *ScriptError {
	msg := exceptionMessage(ex)
	for _, f := range ex.Stack() {
		pos := f.Position()
		if pos.Line <= 0 || IsVirtual(pos.Filename) {
			continue
		}
		return &ScriptError{File: b.SourcePath(pos.Filename), Line: pos.Line, Col: pos.Column + ColumnFix, Msg: msg}
	}
	return &ScriptError{File: b.Path, Line: 1, Col: 1, Msg: msg}
}

// ColumnFix corrects goja's source-mapped columns, which come out 0-based.
const ColumnFix = 1

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
