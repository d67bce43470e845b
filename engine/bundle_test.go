package engine

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dop251/goja"
)

// TestBundleFileModules: a virtual module given in BundleOptions is
// bundled with the script, and its frames are told apart from the user's
// while errors still point into the user's file through the source map.
func TestBundleFileModules(t *testing.T) {
	mods := map[string]string{"outbound:extra": "export function greet(n) {\n  if (n === 'boom') throw new Error('inside the module');\n  return 'hello ' + n;\n}\n"}
	b, err := BundleFile(td("virtual_import.ts"), BundleOptions{Modules: mods})
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(td("virtual_import.ts"))
	if b.Path != abs || len(b.Inputs) != 1 || b.Inputs[0] != abs {
		t.Fatalf("Path %q, Inputs %v", b.Path, b.Inputs)
	}
	prg, err := b.Compile()
	if err != nil {
		t.Fatal(err)
	}
	vm := goja.New()
	if _, err := vm.RunProgram(prg); err != nil {
		t.Fatal(err)
	}
	run, _ := goja.AssertFunction(vm.Get(bundleGlobal).ToObject(vm).Get("run"))
	v, err := run(goja.Undefined(), vm.ToValue("world"))
	if err != nil || v.String() != "hello world" {
		t.Fatalf("run() = %v, %v", v, err)
	}

	// An exception thrown in the virtual module is placed in the user's
	// file, at the call.
	_, err = run(goja.Undefined(), vm.ToValue("boom"))
	var ex *goja.Exception
	if !errors.As(err, &ex) {
		t.Fatalf("run(boom) = %v, want an exception", err)
	}
	se := b.Locate(ex)
	if se.File != abs || se.Line != 5 || se.Col < 1 || se.Msg != "Error: inside the module" {
		t.Fatalf("Locate = %+v, want %s:5", se, abs)
	}
}

func TestBundleFileUnknownModule(t *testing.T) {
	_, err := BundleFile(td("virtual_import.ts"), BundleOptions{})
	var se *ScriptError
	if !errors.As(err, &se) || !strings.HasSuffix(se.File, "virtual_import.ts") || se.Line != 2 || !strings.Contains(se.Msg, "outbound:extra") {
		t.Fatalf("err = %v, want a ScriptError at virtual_import.ts:2 naming the module", err)
	}
}

func TestIsVirtual(t *testing.T) {
	for name, want := range map[string]bool{
		"outbound-shim:outbound:test":       true,
		"outbound-shim:@cloudflare/sandbox": true,
		"outbound:introspect.js":            true,
		"policy.test.js":                    false,
		"/abs/dir/policy.ts":                false,
	} {
		if got := IsVirtual(name); got != want {
			t.Errorf("IsVirtual(%q) = %v, want %v", name, got, want)
		}
	}
}
