package childenv

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMergeSetsContractAndDropsBypassAndSecrets(t *testing.T) {
	base := []string{"PATH=/bin", "NO_PROXY=*", "no_proxy=localhost", "HTTP_PROXY=http://old", "HOME=/root",
		"OUTBOUND_ADMIN_TOKEN=admin-secret", "OUTBOUND_STORE=redis://u:redis-secret@r:6379/0", "OUTBOUND_INSTANCE_TOKEN=other-token"}
	env := Merge(base, Vars("sbx-1", "http://sbx-1:tok@127.0.0.1:3128", Paths{CA: "/t/ca.pem", Bundle: "/t/b.pem"}))
	get := func(k string) (string, bool) {
		for _, e := range env {
			if v, ok := strings.CutPrefix(e, k+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	want := map[string]string{
		"HTTP_PROXY": "http://sbx-1:tok@127.0.0.1:3128", "https_proxy": "http://sbx-1:tok@127.0.0.1:3128",
		"NODE_USE_ENV_PROXY": "1", "OUTBOUND_INSTANCE_ID": "sbx-1",
		"OUTBOUND_CA_CERT": "/t/ca.pem", "NODE_EXTRA_CA_CERTS": "/t/ca.pem", "DENO_CERT": "/t/ca.pem",
		"SSL_CERT_FILE": "/t/b.pem", "REQUESTS_CA_BUNDLE": "/t/b.pem", "CURL_CA_BUNDLE": "/t/b.pem",
		"GIT_SSL_CAINFO": "/t/b.pem", "PIP_CERT": "/t/b.pem", "CARGO_HTTP_CAINFO": "/t/b.pem", "AWS_CA_BUNDLE": "/t/b.pem",
		"PATH": "/bin", "HOME": "/root",
	}
	for k, v := range want {
		if got, ok := get(k); !ok || got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"NO_PROXY", "no_proxy", "OUTBOUND_ADMIN_TOKEN", "OUTBOUND_STORE", "OUTBOUND_INSTANCE_TOKEN"} {
		if _, ok := get(k); ok {
			t.Errorf("%s still set", k)
		}
	}
	for _, secret := range []string{"admin-secret", "redis-secret", "other-token"} {
		if slices.ContainsFunc(env, func(e string) bool { return strings.Contains(e, secret) }) {
			t.Errorf("%s reached the child", secret)
		}
	}
	if n := len(slices.DeleteFunc(slices.Clone(env), func(e string) bool { return !strings.HasPrefix(e, "HTTP_PROXY=") })); n != 1 {
		t.Errorf("HTTP_PROXY set %d times", n)
	}
}

func TestWriteFilesMergesBundle(t *testing.T) {
	dir := t.TempDir()
	p, err := WriteFiles(dir, []byte("INSTANCE\n"), []byte("ROOTS"))
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(p.CA)
	bundle, _ := os.ReadFile(p.Bundle)
	if string(ca) != "INSTANCE\n" || string(bundle) != "ROOTS\nINSTANCE\n" {
		t.Fatalf("ca %q bundle %q", ca, bundle)
	}
	if filepath.Dir(p.Bundle) != dir {
		t.Fatalf("bundle outside dir: %s", p.Bundle)
	}
}

func TestSystemRootsHonoursSSLCertFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "roots.pem")
	os.WriteFile(f, []byte("MYROOTS"), 0o644)
	b, err := SystemRoots([]string{"SSL_CERT_FILE=" + f})
	if err != nil || string(b) != "MYROOTS" {
		t.Fatalf("got %q %v", b, err)
	}
}

func TestFormat(t *testing.T) {
	vars := [][2]string{{"A", "it's"}}
	sh, _ := Format(vars, "sh")
	if !strings.Contains(sh, `export A='it'\''s'`) || !strings.Contains(sh, "unset NO_PROXY") || !strings.Contains(sh, "unset OUTBOUND_ADMIN_TOKEN\nunset OUTBOUND_STORE\nunset OUTBOUND_INSTANCE_TOKEN\n") {
		t.Fatalf("sh: %q", sh)
	}
	d, _ := Format(vars, "docker")
	if d != "A=it's\n" {
		t.Fatalf("docker: %q", d)
	}
	if _, err := Format(vars, "xml"); err == nil {
		t.Fatal("unknown format accepted")
	}
}
