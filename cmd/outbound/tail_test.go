package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

const tailToken = "tail-admin-token"

func startTailServer(t *testing.T) (*apptest.Server, *http.Client) {
	t.Helper()
	script, _ := filepath.Abs("../../testdata/live/policy.js")
	srv := apptest.Start(t, app.Config{Script: script, AdminToken: tailToken, Vars: map[string]string{"API_KEY": "sk-live-tail-secret"}})
	return srv, apptest.Client(t, srv.Create(t, "sbx-1", ""))
}

// tail starts `outbound ctl tail` and returns its output lines, once the
// server counts its subscription.
func tail(t *testing.T, srv *apptest.Server, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"ctl", "--admin", srv.AdminAddr().String(), "tail"}, args...)...)
	cmd.Env = append(os.Environ(), "OUTBOUND_ADMIN_TOKEN="+tailToken)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	waitFor(t, "the tail's subscription", func() bool { return eventSubscribers(t, srv) == 1 })
	return cmd, lines
}

func eventSubscribers(t *testing.T, srv *apptest.Server) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+srv.AdminAddr().String()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+tailToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.Count(string(b), "\noutbound_events_subscribers 1\n")
}

// lineMatching waits for an output line that re matches.
func lineMatching(t *testing.T, lines <-chan string, re string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("tail ended before a line matching %s", re)
			}
			if regexp.MustCompile(re).MatchString(l) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line matching %s within 60s", re)
		}
	}
}

func get(t *testing.T, c *http.Client, u string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func TestCtlTailPrintsDecisionsForAPerson(t *testing.T) {
	srv, sbx := startTailServer(t)
	cmd, lines := tail(t, srv, "sbx-1")
	get(t, sbx, "http://any.example/some/path?token=hidden")
	lineMatching(t, lines, `^\d\d:\d\d:\d\d\.\d{3}  sbx-1  console\.warn  outbound sees key \[redacted\]$`)
	lineMatching(t, lines, `^\d\d:\d\d:\d\d\.\d{3}  sbx-1  GET any\.example/some/path  → 200  outbound \(outbound\)  \d+\.\d ms$`)
	get(t, sbx, "http://blocked.example/")
	lineMatching(t, lines, `  sbx-1  GET blocked\.example/  → 520  denied  `)

	// Interrupted, it stops quietly with status 0.
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tail after SIGINT: %v", err)
	}
}

func TestCtlTailJSON(t *testing.T) {
	srv, sbx := startTailServer(t)
	_, lines := tail(t, srv, "--json")
	get(t, sbx, "http://any.example/j")
	l := lineMatching(t, lines, `"event":"decision"`)
	var ev struct {
		Event string
		Data  struct {
			Instance, Method, Host, Path, Step string
			Status                             int
			Handler                            *string
		}
	}
	if err := json.Unmarshal([]byte(l), &ev); err != nil {
		t.Fatalf("%v: %s", err, l)
	}
	if ev.Data.Instance != "sbx-1" || ev.Data.Path != "/j" || ev.Data.Status != 200 || ev.Data.Handler == nil {
		t.Fatalf("json line: %s", l)
	}
}

func TestCtlTailWrongToken(t *testing.T) {
	srv, _ := startTailServer(t)
	_, stderr, code := outbound(t, nil, "ctl", "--admin", srv.AdminAddr().String(), "--admin-token", "wrong", "tail")
	if code != 1 || !strings.Contains(stderr, "401") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := outbound(t, nil, "ctl", "tail", "a", "b"); code != 2 || !strings.Contains(stderr, "usage") {
		t.Fatalf("two ids: exit %d, stderr %q", code, stderr)
	}
}

// TestTailLineEscapesControlCharacters: a sandbox picks its paths, and a
// script its console lines; neither may drive the operator's terminal.
func TestTailLineEscapesControlCharacters(t *testing.T) {
	for _, ev := range []client.Event{
		{Kind: "decision", Data: json.RawMessage(`{"time":"2025-01-02T03:04:05Z","instance":"a","method":"GET","host":"x","path":"/\u001b[2J\u009b31m","step":"internet","status":200,"ms":1,"handler":null}`)},
		{Kind: "console", Data: json.RawMessage(`{"time":"2025-01-02T03:04:05Z","instance":"a","level":"info","message":"one\ntwo\u001b]0;pwned\u0007"}`)},
	} {
		l := tailLine(ev)
		if strings.ContainsFunc(l, isControl) || !strings.Contains(l, `\x1b`) {
			t.Fatalf("%s line %q", ev.Kind, l)
		}
	}
	if l := tailLine(client.Event{Kind: "reload", Data: json.RawMessage(`{"time":"2025-01-02T03:04:05Z","generation":2,"error":"p.js:1:2: bad"}`)}); !strings.HasSuffix(l, "reload failed: p.js:1:2: bad (generation 2 keeps serving)") {
		t.Fatalf("reload line %q", l)
	}
	if l := tailLine(client.Event{Kind: "dropped", Data: json.RawMessage(`{"dropped":7}`)}); l != "-- 7 events dropped: this client fell behind --" {
		t.Fatalf("dropped line %q", l)
	}
}

// TestCtlTailSkipsUnreadableEvents: an event tail cannot read (an unknown
// kind, bad JSON) prints nothing, not a blank line.
func TestCtlTailSkipsUnreadableEvents(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: mystery\ndata: {}\n\n"+
			"event: decision\ndata: not json\n\n"+
			"event: dropped\ndata: {\"dropped\":3}\n\n")
	})) // then it ends the stream, which ends the tail
	defer api.Close()
	out, stderr, code := outbound(t, nil, "ctl", "--admin", api.URL, "tail")
	if code != 1 || !strings.Contains(stderr, "ended") || out != "-- 3 events dropped: this client fell behind --\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
