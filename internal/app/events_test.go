package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

const (
	liveSecret = "sk-live-0123456789"
	adminToken = "admin-token-for-tests"
)

// liveEvent is any event of the stream, decoded.
type liveEvent struct {
	Kind       string
	Instance   string  `json:"instance"`
	Class      string  `json:"class"`
	Method     string  `json:"method"`
	Host       string  `json:"host"`
	Path       string  `json:"path"`
	Step       string  `json:"step"`
	Blocked    bool    `json:"blocked"`
	Status     int     `json:"status"`
	MS         float64 `json:"ms"`
	Handler    *string `json:"handler"`
	Level      string  `json:"level"`
	Message    string  `json:"message"`
	Generation int     `json:"generation"`
	Error      *string `json:"error"`
	Raw        string
}

// follow subscribes to the event stream and returns its events as a channel,
// once the subscription is live (the subscriber gauge counts it).
func follow(t *testing.T, srv *apptest.Server, c *client.Client, instance string) <-chan liveEvent {
	t.Helper()
	before := subscribers(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan liveEvent, 1000)
	done := make(chan error, 1)
	go func() {
		done <- c.Events(ctx, instance, func(ev client.Event) error {
			e := liveEvent{Kind: ev.Kind, Raw: string(ev.Data)}
			if err := json.Unmarshal(ev.Data, &e); err != nil {
				return err
			}
			out <- e
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("event stream ended with %v", err)
		}
	})
	waitUntil(t, "the subscription", func() bool { return subscribers(t, srv) > before })
	return out
}

func subscribers(t *testing.T, srv *apptest.Server) int {
	t.Helper()
	return int(metric(t, srv.AdminAddr().String(), "outbound_events_subscribers"))
}

// metric reads one unlabelled series from /metrics.
func metric(t *testing.T, admin, name string) float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no %s in /metrics:\n%s", name, b)
	}
	var v float64
	json.Unmarshal([]byte(m[1]), &v)
	return v
}

// nextOf waits for the next event of one kind, skipping others.
func nextOf(t *testing.T, ch <-chan liveEvent, kind string) liveEvent {
	t.Helper()
	return nextWhere(t, ch, kind, func(liveEvent) bool { return true })
}

// nextWhere waits for the next event of one kind that ok accepts. Events of
// concurrent requests may come in any order: each follows its own answer.
func nextWhere(t *testing.T, ch <-chan liveEvent, kind string, ok func(liveEvent) bool) liveEvent {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e := <-ch:
			if e.Kind == kind && ok(e) {
				return e
			}
		case <-timeout:
			t.Fatalf("no such %s event within 30s", kind)
		}
	}
}

// saveScript replaces the script in one step, as an editor's save does.
func saveScript(t *testing.T, path string, src []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func startLive(t *testing.T) (*apptest.Server, string) {
	t.Helper()
	src, err := os.ReadFile("../../testdata/live/policy.js")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "policy.js")
	if err := os.WriteFile(script, src, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := apptest.Start(t, app.Config{Script: script, AdminToken: adminToken, Vars: map[string]string{"API_KEY": liveSecret}})
	return srv, script
}

func TestEventsStreamDecisionsConsoleAndReloads(t *testing.T) {
	srv, script := startLive(t)
	c1 := apptest.Client(t, srv.Create(t, "sbx-1", ""))
	events := follow(t, srv, srv.Admin, "")

	// A static handler that logs the secret; the secret is in the path and
	// the query too.
	if got := body(t, c1, "http://any.example/p/"+liveSecret+"?key="+liveSecret); got != "static" {
		t.Fatalf("answer %q", got)
	}
	con := nextOf(t, events, "console")
	if con.Instance != "sbx-1" || con.Class != "default" || con.Level != "warn" || con.Message != "outbound sees key [redacted]" {
		t.Fatalf("console event: %s", con.Raw)
	}
	d := nextOf(t, events, "decision")
	if d.Instance != "sbx-1" || d.Method != "GET" || d.Host != "any.example" || d.Path != "/p/[redacted]" ||
		d.Step != "outbound" || d.Blocked || d.Status != 200 || d.Handler == nil || *d.Handler != "outbound" || d.MS <= 0 {
		t.Fatalf("decision event: %s", d.Raw)
	}
	if strings.Contains(d.Raw, "key=") || !strings.Contains(d.Raw, `"time":"`) {
		t.Fatalf("decision event carries the query or lacks the time: %s", d.Raw)
	}

	// A runtime handler, then a denied host: no handler ran.
	args := []json.RawMessage{json.RawMessage(`"tag"`), json.RawMessage(`{"n":1}`)}
	if _, err := srv.Admin.Call(context.Background(), "sbx-1", "setOutboundHandler", args); err != nil {
		t.Fatal(err)
	}
	body(t, c1, "http://any.example/two")
	if d := nextWhere(t, events, "decision", func(e liveEvent) bool { return e.Path == "/two" }); d.Step != "outbound_runtime" || d.Handler == nil || *d.Handler != "tag" || d.Path != "/two" {
		t.Fatalf("runtime handler decision: %s", d.Raw)
	}
	resp, err := c1.Get("http://blocked.example/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := nextWhere(t, events, "decision", func(e liveEvent) bool { return e.Host == "blocked.example" }); d.Step != "denied" || !d.Blocked || d.Status != 520 || d.Handler != nil || !strings.Contains(d.Raw, `"handler":null`) {
		t.Fatalf("denied decision: %s", d.Raw)
	}

	// A refused CONNECT is a decision too; an open tunnel's comes when it
	// closes, with its whole duration.
	if _, err := c1.Get("https://blocked.example/"); err == nil {
		t.Fatal("a CONNECT to a denied host went through")
	}
	if d := nextWhere(t, events, "decision", func(e liveEvent) bool { return e.Method == "CONNECT" }); d.Host != "blocked.example" ||
		d.Step != "denied" || !d.Blocked || d.Status != 520 || d.Path != "" || d.Instance != "sbx-1" {
		t.Fatalf("CONNECT decision: %s", d.Raw)
	}

	// The proxy's own refusals are blocked too: wrong credentials here.
	wrong := srv.Create(t, "sbx-wrong", "")
	wrong.ProxyURL = strings.Replace(wrong.ProxyURL, "@", "x@", 1)
	resp, err = apptest.Client(t, wrong).Get("http://any.example/wrong")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := nextWhere(t, events, "decision", func(e liveEvent) bool { return e.Path == "/wrong" }); d.Step != "auth" || !d.Blocked || d.Status != 407 {
		t.Fatalf("refused credentials decision: %s", d.Raw)
	}

	// A broken save is reported with its position; the fix is a new generation.
	saveScript(t, script, []byte("export default { outbound( {\n"))
	r := nextOf(t, events, "reload")
	if r.Error == nil || !regexp.MustCompile(`policy\.js:\d+:\d+: `).MatchString(*r.Error) || r.Generation != 1 {
		t.Fatalf("failed reload event: %s", r.Raw)
	}
	src, _ := os.ReadFile("../../testdata/live/policy.js")
	saveScript(t, script, src)
	if r := nextWhere(t, events, "reload", func(e liveEvent) bool { return e.Error == nil }); r.Generation != 2 {
		t.Fatalf("reload event: %s", r.Raw)
	}
}

func TestEventsFilterByInstance(t *testing.T) {
	srv, _ := startLive(t)
	c1 := apptest.Client(t, srv.Create(t, "sbx-1", ""))
	c2 := apptest.Client(t, srv.Create(t, "sbx-2", ""))
	only2 := follow(t, srv, srv.Admin, "sbx-2")
	all := follow(t, srv, srv.Admin, "")

	body(t, c1, "http://any.example/from-1")
	body(t, c2, "http://any.example/from-2")
	// A request's event follows its answer, so the two may come in either
	// order; the full stream sees both.
	seen := map[string]bool{}
	for len(seen) < 2 {
		seen[nextOf(t, all, "decision").Instance] = true
	}
	// Both were published, and the filtered stream passed on only its own.
	// One more from sbx-2 marks the end of what it could have had.
	body(t, c2, "http://any.example/marker")
	for {
		e := nextOf(t, only2, "decision")
		if e.Instance != "sbx-2" {
			t.Fatalf("the sbx-2 stream got %s", e.Raw)
		}
		if e.Path == "/marker" {
			break
		}
	}
}

// TestEventsNeedTheAdminToken: the stream is behind the token like every
// call; the page's files are not (they hold no data), and a browser opening
// the admin address lands on the page.
func TestEventsNeedTheAdminToken(t *testing.T) {
	srv, _ := startLive(t)
	base := "http://" + srv.AdminAddr().String()
	for _, tok := range []string{"", "wrong"} {
		err := client.New(base, tok).Events(context.Background(), "", func(client.Event) error { return nil })
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			t.Fatalf("token %q: %v", tok, err)
		}
	}
	if n := subscribers(t, srv); n != 0 {
		t.Fatalf("%d subscribers after refused streams", n)
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/app.js": "text/javascript", "/ui/style.css": "text/css"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) ||
			!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") || len(b) == 0 {
			t.Fatalf("GET %s: %d %q %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
		}
	}
	// Everything else still needs the token.
	resp, err = http.Get(base + "/v1/instances")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/instances without a token: %d", resp.StatusCode)
	}
}

// TestStatusNamesEachClassHandlers: the page's handler switch reads them.
func TestStatusNamesEachClassHandlers(t *testing.T) {
	srv, _ := startLive(t)
	raw, err := srv.Admin.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		OutboundHandlers map[string][]string `json:"outboundHandlers"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(st.OutboundHandlers["default"], ","); got != "quiet,tag" {
		t.Fatalf("outboundHandlers: %s", raw)
	}
}

// TestShutdownEndsEventStreams: a watcher does not hold a stopping server
// for its shutdown timeout; its stream ends.
func TestShutdownEndsEventStreams(t *testing.T) {
	script, _ := filepath.Abs("../../testdata/live/policy.js")
	srv, err := app.New(context.Background(), app.Config{Script: script, Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	c := client.New(srv.AdminAddr().String(), "")
	ended := make(chan error, 1)
	go func() {
		ended <- c.Events(context.Background(), "", func(client.Event) error { return nil })
	}()
	waitUntil(t, "the stream", func() bool { return metric(t, srv.AdminAddr().String(), "outbound_events_subscribers") == 1 })
	stop()
	select {
	case err := <-ended:
		if err == nil || !strings.Contains(err.Error(), "ended") {
			t.Fatalf("stream ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the event stream outlived the server's shutdown")
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
