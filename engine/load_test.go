package engine

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/outbound-dev/outbound/handlers/chain"
)

func td(name string) string { return filepath.Join("..", "testdata", "engine", name) }

func mustLoad(t testing.TB, name string) *Program {
	t.Helper()
	p, err := Load(context.Background(), td(name), LoadOptions{})
	if err != nil {
		t.Fatalf("Load(%s): %v", name, err)
	}
	return p
}

func TestLoadPlainForm(t *testing.T) {
	p := mustLoad(t, "plain.js")
	info := p.Info()
	abs, _ := filepath.Abs(td("plain.js"))
	if info.Path != abs {
		t.Errorf("Path = %q, want %q", info.Path, abs)
	}
	if !info.HasBlocked {
		t.Error("HasBlocked = false")
	}
	if !reflect.DeepEqual(info.Inputs, []string{abs}) {
		t.Errorf("Inputs = %v", info.Inputs)
	}
	want := []chain.ClassSpec{{
		Name:           "default",
		EnableInternet: false,
		InterceptHTTPS: true,
		AllowedHosts:   []string{"github.com", "*.npmjs.org", "10.1.0.0/16"},
		DeniedHosts:    []string{"evil.com"},
		ByHostKeys:     []string{"github.com", "*.example.com"},
		Handlers:       []string{"allowHosts", "noHttp"},
		HasOutbound:    true,
		HasBlocked:     true, // the module's export
	}}
	if !reflect.DeepEqual(info.Classes, want) {
		t.Errorf("Classes =\n%+v\nwant\n%+v", info.Classes, want)
	}
}

func TestLoadClassFormTypeScriptMultiFile(t *testing.T) {
	p := mustLoad(t, "sandbox.ts")
	info := p.Info()
	if info.HasBlocked {
		t.Error("HasBlocked = true")
	}
	main, _ := filepath.Abs(td("sandbox.ts"))
	lib, _ := filepath.Abs(td("lib/helper.ts"))
	if !reflect.DeepEqual(info.Inputs, []string{lib, main}) {
		t.Errorf("Inputs = %v", info.Inputs)
	}
	want := []chain.ClassSpec{
		{
			Name: "MySandbox", EnableInternet: false, InterceptHTTPS: true,
			AllowedHosts: []string{"github.com"},
			ByHostKeys:   []string{"github.com"},
			Handlers:     []string{"allowHosts", "noHttp"}, // merged over two assignments
			HasOutbound:  true,                             // via the outboundProxy alias
		},
		{
			Name: "FieldForm", EnableInternet: true,
			DeniedHosts: []string{"evil.com"},
			ByHostKeys:  []string{"a.com", "b.com"},
			Handlers:    []string{"a", "z"},
		},
		{Name: "Replaced", EnableInternet: true, ByHostKeys: []string{"two.com"}},
	}
	if !reflect.DeepEqual(info.Classes, want) {
		t.Errorf("Classes =\n%+v\nwant\n%+v", info.Classes, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		file string
		want string // suffix of the path:line:col: message
	}{
		{"syntax_error.js", "syntax_error.js:3:15: Unexpected \";\""},
		{"throw_at_load.js", "throw_at_load.js:3:9: Error: top-level boom"},
		{"bad_hosts.js", "class default: allowedHosts[1] must be a string, got a number"},
		{"blocked_bad.js", "class Bad: blocked must be a function, got"},
		{"missing.js", "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			_, err := Load(context.Background(), td(tc.file), LoadOptions{})
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %q, want it to contain %q", err, tc.want)
			}
			var se *ScriptError
			if tc.file != "missing.js" && !errors.As(err, &se) {
				t.Fatalf("error %T is not a *ScriptError", err)
			}
		})
	}
}
