package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
	"github.com/outbound-dev/outbound/proxy/control"
)

const versioned = `export default {
  outboundHandlers: { tag: (req, env, ctx) => new Response("tag " + JSON.stringify(ctx.params)) },
  outbound: () => new Response("VERSION"),
};
`

func writeScript(t *testing.T, path, version string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Replace(versioned, "VERSION", version, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type status struct {
	Script struct {
		Generation int
		Error      *string
	}
	Classes []string
}

func getStatus(t *testing.T, srv *apptest.Server) status {
	t.Helper()
	raw, err := srv.Admin.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var s status
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func body(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	code, b := call(t, c, "GET", u, nil)
	if code != 200 {
		t.Fatalf("GET %s: %d %q", u, code, b)
	}
	return b
}

func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestReloadThroughServer: an edited script serves the next request, a
// broken one is reported in /v1/status while the last good one serves, and
// runtime overrides survive both.
func TestReloadThroughServer(t *testing.T) {
	script := filepath.Join(t.TempDir(), "policy.js")
	writeScript(t, script, "v1")
	srv := apptest.Start(t, app.Config{Script: script})
	c := apptest.Client(t, srv.Create(t, "sbx-1", ""))
	if got := body(t, c, "http://any.example/"); got != "v1" {
		t.Fatalf("first generation answered %q", got)
	}

	writeScript(t, script, "v2")
	waitUntil(t, "generation 2", func() bool { return getStatus(t, srv).Script.Generation == 2 })
	if got := body(t, c, "http://any.example/"); got != "v2" {
		t.Fatalf("after reload: %q", got)
	}

	args := []json.RawMessage{json.RawMessage(`"tag"`), json.RawMessage(`{"n":1}`)}
	if _, err := srv.Admin.Call(context.Background(), "sbx-1", "setOutboundHandler", args); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(script, []byte("export default { outbound( {\n"), 0o644)
	waitUntil(t, "the load error in status", func() bool { return getStatus(t, srv).Script.Error != nil })
	st := getStatus(t, srv)
	if st.Script.Generation != 2 || !regexp.MustCompile(`policy\.js:\d+:\d+: `).MatchString(*st.Script.Error) {
		t.Fatalf("status after a broken save: generation %d, error %q", st.Script.Generation, *st.Script.Error)
	}
	if got := body(t, c, "http://any.example/"); got != `tag {"n":1}` {
		t.Fatalf("the last good script with the override should serve: %q", got)
	}

	writeScript(t, script, "v3")
	waitUntil(t, "the error to clear", func() bool { return getStatus(t, srv).Script.Error == nil })
	if got := body(t, c, "http://any.example/"); got != `tag {"n":1}` {
		t.Fatalf("the override did not survive the reload: %q", got)
	}
}

// TestRestartKeepsInstancesNotCAs: instances, tokens and overrides survive
// a restart on the same state dir; the CA is new, as upstream's.
func TestRestartKeepsInstancesNotCAs(t *testing.T) {
	script := filepath.Join(t.TempDir(), "policy.js")
	writeScript(t, script, "v1")
	state := t.TempDir()
	ctx := context.Background()

	first := apptest.Start(t, app.Config{Script: script, StateDir: state})
	created := first.Create(t, "sbx-1", "")
	args := []json.RawMessage{json.RawMessage(`"tag"`), json.RawMessage(`{"kept":true}`)}
	if _, err := first.Admin.Call(ctx, "sbx-1", "setOutboundHandler", args); err != nil {
		t.Fatal(err)
	}
	first.Close()

	second := apptest.Start(t, app.Config{Script: script, StateDir: state})
	pem, err := second.Admin.CAPEM(ctx, "sbx-1")
	if err != nil {
		t.Fatal(err)
	}
	if string(pem) == created.CAPEM {
		t.Fatal("the CA survived a restart; it must be ephemeral")
	}
	// Same id and token, new listener address, new CA.
	u, _ := url.Parse(created.ProxyURL)
	u.Host = second.ProxyAddr().String()
	c := apptest.Client(t, control.Created{ID: "sbx-1", ProxyURL: u.String(), CAPEM: string(pem)})
	if got := body(t, c, "http://any.example/"); got != `tag {"kept":true}` {
		t.Fatalf("after restart: %q", got)
	}
	if raw, _ := second.Admin.Get(ctx, "sbx-1"); !strings.Contains(string(raw), `"caPersisted":false`) {
		t.Fatalf("view: %s", raw)
	}
	if files, _ := filepath.Glob(filepath.Join(state, "*")); len(files) == 0 {
		t.Fatal("nothing persisted")
	} else {
		for _, f := range files {
			b, _ := os.ReadFile(f)
			tok, _ := u.User.Password()
			if strings.Contains(string(b), tok) || strings.Contains(string(b), "PRIVATE KEY") {
				t.Fatalf("%s holds the token or a private key", f)
			}
		}
	}
}

// TestCheckAdvertise: --advertise goes into proxy_url, so a host that is
// not one (a space, a slash) is refused before any instance is made.
func TestCheckAdvertise(t *testing.T) {
	for _, v := range []string{"127.0.0.1:3128", "proxy.internal:3128", "[::1]:3128", "host.docker.internal:1"} {
		if err := app.CheckAdvertise(v); err != nil {
			t.Errorf("CheckAdvertise(%q) = %v", v, err)
		}
		u, err := url.Parse((&url.URL{Scheme: "http", User: url.UserPassword("id", "tok"), Host: v}).String())
		if err != nil || u.Host != v {
			t.Errorf("%q does not round-trip through proxy_url: %v", v, err)
		}
	}
	for _, v := range []string{"a b:3128", "a/b:3128", "a@b:3128", "%20:3128", ":3128", "no-port", "h:0", "h:65536", "h:x", "::1:3128"} {
		if err := app.CheckAdvertise(v); err == nil || !strings.Contains(err.Error(), "bad --advertise") {
			t.Errorf("CheckAdvertise(%q) = %v, want bad --advertise", v, err)
		}
	}
}

// TestStoreFlag: one reading of --store for the check, the log name and
// the default state directory; none shows a password.
func TestStoreFlag(t *testing.T) {
	for _, v := range []string{"", "bolt:", "bolt:/x/o.db", "redis://:pw@127.0.0.1:6379/0", "rediss://h:6380/1"} {
		if err := app.CheckStore(v); err != nil {
			t.Errorf("CheckStore(%q) = %v", v, err)
		}
	}
	for _, v := range []string{"mysql://u:hunter2@x", "redis://:hunter2@[::1", "hunter2@x", "bolt"} {
		err := app.CheckStore(v)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("CheckStore(%q) = %v, want an error without the password", v, err)
		}
	}
	for v, want := range map[string]bool{"": true, "bolt:": true, "bolt:/x/o.db": false, "redis://h:1/0": false} {
		if got := app.StoreInStateDir(v); got != want {
			t.Errorf("StoreInStateDir(%q) = %v", v, got)
		}
	}
	for _, tc := range []struct{ store, want string }{
		{"", "bolt:" + filepath.Join("/s", "outbound.db")},
		{"bolt:", "bolt:" + filepath.Join("/s", "outbound.db")},
		{"bolt:/x/o.db", "bolt:/x/o.db"},
		{"redis://:hunter2@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
	} {
		if got := app.StoreName(app.Config{Store: tc.store, StateDir: "/s"}); got != tc.want {
			t.Errorf("StoreName(%q) = %q, want %q", tc.store, got, tc.want)
		}
	}
}
