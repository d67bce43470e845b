package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
	"github.com/outbound-dev/outbound/internal/policytest"
)

// echo answers with what the upstream saw, so a test can check injection.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"host":          r.Host,
		"path":          r.URL.Path,
		"authorization": r.Header.Get("Authorization"),
		"proxyauth":     r.Header.Get("Proxy-Authorization"),
	})
})

type seen struct {
	Host, Path, Authorization, ProxyAuth string
}

func get(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func upstreamSaw(t *testing.T, body string) seen {
	t.Helper()
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("upstream answer %q: %v", body, err)
	}
	return s
}

func TestGitHubToken(t *testing.T) {
	up := apptest.NewTLSUpstream(t, echo, "api.github.com", "github.com")
	const token = "ghp_exampletoken123"
	srv := apptest.Start(t, app.Config{
		Script:     "github-token.js",
		Vars:       map[string]string{"GITHUB_TOKEN": token},
		ConnectTo:  []string{up.ConnectTo("api.github.com", 443), up.ConnectTo("github.com", 443)},
		UpstreamCA: []string{up.CAFile},
	})
	sbx := srv.Create(t, "sbx-1", "")
	c := apptest.Client(t, sbx)

	for _, u := range []string{"https://api.github.com/user", "https://github.com/org/repo.git/info/refs"} {
		code, body := get(t, c, "GET", u, "")
		if code != 200 {
			t.Fatalf("%s: %d %s", u, code, body)
		}
		if s := upstreamSaw(t, body); s.Authorization != "Bearer "+token || s.ProxyAuth != "" {
			t.Errorf("%s: upstream saw %+v", u, s)
		}
	}
	// Anything else stays inside: enableInternet is false.
	if code, body := get(t, c, "GET", "https://example.com/", ""); code != 520 || body != "Origin is disallowed" {
		t.Errorf("example.com: %d %q", code, body)
	}
	if strings.Contains(srv.Log.String(), token) {
		t.Errorf("the token reached the log")
	}
}

func TestPerInstanceKeys(t *testing.T) {
	up := apptest.NewTLSUpstream(t, echo, "api.openai.com")
	srv := apptest.Start(t, app.Config{
		Script:     "per-instance-keys.js",
		KV:         []string{"KEYS"},
		ConnectTo:  []string{up.ConnectTo("api.openai.com", 443)},
		UpstreamCA: []string{up.CAFile},
	})
	ctx := context.Background()
	keys := map[string]string{"sbx-1": "sk-one", "sbx-2": "sk-two"}
	for id, key := range keys {
		if err := srv.Admin.KVPut(ctx, "KEYS", id, []byte(key)); err != nil {
			t.Fatal(err)
		}
	}
	for id, key := range keys {
		c := apptest.Client(t, srv.Create(t, id, ""))
		code, body := get(t, c, "POST", "https://api.openai.com/v1/chat/completions", "{}")
		if s := upstreamSaw(t, body); code != 200 || s.Authorization != "Bearer "+key {
			t.Errorf("%s: %d, upstream saw %+v", id, code, s)
		}
	}
	c := apptest.Client(t, srv.Create(t, "sbx-3", ""))
	if code, body := get(t, c, "GET", "https://api.openai.com/v1/models", ""); code != 403 || !strings.Contains(body, "no key stored for sbx-3") {
		t.Errorf("instance without a key: %d %q", code, body)
	}
}

func TestSetupThenLockdown(t *testing.T) {
	up := apptest.NewTLSUpstream(t, echo, "registry.npmjs.org")
	srv := apptest.Start(t, app.Config{
		Script:     "setup-then-lockdown.js",
		ConnectTo:  []string{up.ConnectTo("registry.npmjs.org", 443), up.ConnectTo("evil.example", 443)},
		UpstreamCA: []string{up.CAFile},
	})
	sbx := srv.Create(t, "sbx-1", "")
	c := apptest.Client(t, sbx)
	ctx := context.Background()
	npm := "https://registry.npmjs.org/left-pad"

	if code, _ := get(t, c, "GET", npm, ""); code != 520 {
		t.Fatalf("before setup: %d, want 520", code)
	}
	args := []json.RawMessage{json.RawMessage(`"allowHosts"`), json.RawMessage(`{"allowedHostnames":["registry.npmjs.org"]}`)}
	if _, err := srv.Admin.Call(ctx, "sbx-1", "setOutboundHandler", args); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, c, "GET", npm, ""); code != 200 || upstreamSaw(t, body).Path != "/left-pad" {
		t.Fatalf("during setup: %d %s", code, body)
	}
	if code, body := get(t, c, "GET", "https://evil.example/x", ""); code != 403 || !strings.Contains(body, "not allowed during setup") {
		t.Fatalf("other host during setup: %d %s", code, body)
	}
	if _, err := srv.Admin.Call(ctx, "sbx-1", "setOutboundHandler", []json.RawMessage{json.RawMessage(`"noHttp"`)}); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, c, "GET", npm, ""); code != 403 {
		t.Fatalf("after lockdown: %d, want 403", code)
	}
}

func TestVirtualKV(t *testing.T) {
	srv := apptest.Start(t, app.Config{Script: "virtual-kv.js", KV: []string{"STORE"}})
	one := apptest.Client(t, srv.Create(t, "sbx-1", ""))
	two := apptest.Client(t, srv.Create(t, "sbx-2", ""))

	if code, _ := get(t, one, "PUT", "http://my.kv/greeting", "hello"); code != 204 {
		t.Fatalf("put: %d", code)
	}
	if code, body := get(t, one, "GET", "http://my.kv/greeting", ""); code != 200 || body != "hello" {
		t.Fatalf("get: %d %q", code, body)
	}
	if code, _ := get(t, two, "GET", "http://my.kv/greeting", ""); code != 404 {
		t.Fatalf("another instance read the key: %d", code)
	}
	v, err := srv.Admin.KVGet(context.Background(), "STORE", "sbx-1/greeting")
	if err != nil || string(v) != "hello" {
		t.Fatalf("stored as %q, %v", v, err)
	}
	if code, _ := get(t, one, "GET", "http://elsewhere.example/", ""); code != 520 {
		t.Fatalf("other host: %d, want 520", code)
	}
}

func TestCloudflareClassTS(t *testing.T) {
	up := apptest.NewTLSUpstream(t, echo, "api.github.com", "github.com")
	srv := apptest.Start(t, app.Config{
		Script:     "cloudflare-class.ts",
		Vars:       map[string]string{"GITHUB_TOKEN": "ghp_ts"},
		ConnectTo:  []string{up.ConnectTo("api.github.com", 443), up.ConnectTo("github.com", 443)},
		UpstreamCA: []string{up.CAFile},
	})
	sbx := srv.Create(t, "sbx-1", "MySandbox")
	c := apptest.Client(t, sbx)
	code, body := get(t, c, "GET", "https://api.github.com/user", "")
	if code != 200 || upstreamSaw(t, body).Authorization != "Bearer ghp_ts" {
		t.Fatalf("api.github.com: %d %s", code, body)
	}
	// github.com is allowed with no handler: forwarded as is.
	code, body = get(t, c, "GET", "https://github.com/", "")
	if code != 200 || upstreamSaw(t, body).Authorization != "" {
		t.Fatalf("github.com: %d %s", code, body)
	}
	if code, _ := get(t, c, "GET", "https://example.com/", ""); code != 520 {
		t.Fatalf("example.com: %d, want 520", code)
	}
	if _, err := srv.Admin.Call(context.Background(), "sbx-1", "setOutboundHandler", []json.RawMessage{json.RawMessage(`"noHttp"`)}); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, c, "GET", "https://github.com/", ""); code != 403 {
		t.Fatalf("after noHttp: %d, want 403", code)
	}
}

func TestJSONBlock(t *testing.T) {
	srv := apptest.Start(t, app.Config{Script: "json-block.js"})
	c := apptest.Client(t, srv.Create(t, "sbx-1", ""))
	for _, tc := range []struct{ url, reason string }{
		{"http://nowhere.example.net/", "not_allowed"},
		{"http://private.example.org/", "denied"},
	} {
		code, body := get(t, c, "GET", tc.url, "")
		var got struct{ Error, Reason, Host string }
		if err := json.Unmarshal([]byte(body), &got); err != nil || code != 403 || got.Reason != tc.reason || got.Error != "egress_blocked" {
			t.Errorf("%s: %d %s", tc.url, code, body)
		}
	}
}

// TestHandlerTests: every example script has a .test.js beside it, and its
// handler tests pass (make test also runs them through the built binary).
func TestHandlerTests(t *testing.T) {
	scripts, _ := filepath.Glob("*.[jt]s")
	for _, s := range scripts {
		if policytest.IsTestFile(s) {
			continue
		}
		test := strings.TrimSuffix(s, filepath.Ext(s)) + ".test.js"
		if _, err := os.Stat(test); err != nil {
			t.Errorf("%s has no handler tests: want %s", s, test)
		}
	}
	var out bytes.Buffer
	sum, err := policytest.Run(context.Background(), policytest.Options{Out: &out})
	if err != nil || sum.Failed != 0 || sum.Passed == 0 {
		t.Fatalf("handler tests: %+v %v\n%s", sum, err, out.String())
	}
}
