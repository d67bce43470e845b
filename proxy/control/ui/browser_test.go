package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

const adminToken = "ui-test-admin-token"

// screenshotEnv names a PNG file the browser test writes the page to, for
// the README (make ui-screenshot).
const screenshotEnv = "OUTBOUND_UI_SCREENSHOT"

// chromium finds the browser: $OUTBOUND_CHROMIUM, else Debian's chromium or
// another Chrome on PATH. Without one the test is skipped, except in CI
// (CI set), which installs chromium and must run it.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("OUTBOUND_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH in CI: .ci/run installs Debian's chromium")
	}
	t.Skip("no chromium binary on PATH (apt-get install chromium); the browser test cannot run here")
	return ""
}

// stepTimeout bounds one step of the test: generous, since chromium is slow
// to start and to paint on a busy machine.
const stepTimeout = 20 * time.Second

// newBrowser starts a headless chromium that talks to nothing but the pages
// it is sent to: no sync, no component updates, no background requests, a
// fresh profile. As root (CI) it needs --no-sandbox.
func newBrowser(t *testing.T, downloads string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.DisableGPU,
		chromedp.NoSandbox,
		chromedp.WindowSize(1360, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("no-pings", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		cancelBrowser() // waits for chromium to exit, before its profile is removed
		cancelAlloc()
	})
	// The page's console errors and exceptions go to the test log.
	msgs := chromedp.Console(bctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if strings.Contains(m.Text, "status of 401") {
				continue // the page's first calls, before it has the token
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleWarning {
				t.Logf("page %s: %s %s:%d", m.Type, m.Text, m.URL, m.Line)
			}
		}
	}()
	// The first run starts chromium and ties it to bctx, so it gets no
	// step deadline of its own.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", chromium(t), err)
	}
	do(t, bctx, "allowing downloads", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: ptr(true),
		})
		return err
	}))
	return bctx
}

func ptr[T any](v T) *T { return &v }

// do runs steps within stepTimeout.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		t.Fatalf("%s: %v\nthe page shows:\n%s", what, err, pageText(ctx))
	}
}

// pageText is what the page shows, for a failure message.
func pageText(ctx context.Context) string {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// value runs one action that returns a value, within stepTimeout.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// until waits for a JavaScript expression to be true in the page; the step's
// deadline bounds it.
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(0))
}

type css = chromedp.CSS

func get(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestLiveViewInABrowser drives the page in a real chromium: it asks for
// the admin token once, lists the instance, shows decisions as they happen,
// filters them, switches the instance's handler, and downloads its HAR.
func TestLiveViewInABrowser(t *testing.T) {
	src, err := os.ReadFile("../../../testdata/live/policy.js")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "policy.js")
	if err := os.WriteFile(script, src, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := apptest.Start(t, app.Config{Script: script, AdminToken: adminToken, Vars: map[string]string{"API_KEY": "sk-live-0123456789"}})
	sbx := apptest.Client(t, srv.Create(t, "sbx-1", ""))
	downloads := t.TempDir()
	ctx := newBrowser(t, downloads)
	base := "http://" + srv.AdminAddr().String()

	do(t, ctx, "the token question",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), adminToken+kb.Enter), // the keyboard is enough
	)
	do(t, ctx, "the instance and a live stream",
		chromedp.WaitVisible(css(`#instances tr[data-instance="sbx-1"]`)),
		until(`document.getElementById("conn").dataset.state === "live"`),
		until(`document.getElementById("script-status").textContent.includes("generation 1")`),
	)
	row := value(t, ctx, "reading the instance row", chromedp.Text(css(`#instances tr[data-instance="sbx-1"]`)))
	for _, want := range []string{"sbx-1", "default", "blocked.example", "none set"} {
		if !strings.Contains(row, want) {
			t.Fatalf("instance row lacks %q: %q", want, row)
		}
	}

	// Requests made now show up without a reload, a blocked one too.
	get(t, sbx, "http://any.example/from-the-browser-test?q=hidden")
	get(t, sbx, "http://blocked.example/nope")
	do(t, ctx, "the decisions",
		chromedp.WaitVisible(css(`#decisions tr[data-outcome="allowed"]`)),
		chromedp.WaitVisible(css(`#decisions tr[data-outcome="blocked"]`)),
		chromedp.WaitVisible(css(`#console li`)),
	)
	decisions := value(t, ctx, "reading the decisions", chromedp.Text(css(`#decisions tbody`)))
	console := value(t, ctx, "reading the console", chromedp.Text(css(`#console`)))
	for _, want := range []string{"any.example", "/from-the-browser-test", "outbound", "200", "blocked.example", "denied", "520"} {
		if !strings.Contains(decisions, want) {
			t.Fatalf("decisions lack %q: %q", want, decisions)
		}
	}
	if strings.Contains(decisions, "hidden") || !strings.Contains(console, "outbound sees key [redacted]") {
		t.Fatalf("query or secret on the page: %q / %q", decisions, console)
	}

	// Blocked only: the allowed row hides.
	do(t, ctx, "filtering",
		chromedp.Click(css(`input[name="f-outcome"][value="blocked"]`)),
		until(`document.querySelector('#decisions tr[data-outcome="allowed"]').hidden`),
		chromedp.WaitVisible(css(`#decisions tr[data-outcome="blocked"]`)),
		chromedp.Click(css(`input[name="f-outcome"][value="all"]`)),
	)

	// Switch the handler from the page, with params.
	inRow := func(sel string) css { return css(`#instances tr[data-instance="sbx-1"] ` + sel) }
	do(t, ctx, "switching the handler",
		chromedp.SetValue(inRow(`select[name="handler"]`), "tag"),
		chromedp.SendKeys(inRow(`input[name="params"]`), `{"n":2}`),
		chromedp.Click(inRow(`button[type="submit"]`)),
		until(`document.querySelector('#instances tr[data-instance="sbx-1"] .current').textContent === 'tag {"n":2}'`),
	)
	raw, err := srv.Admin.Get(context.Background(), "sbx-1")
	if err != nil {
		t.Fatal(err)
	}
	var view struct {
		OutboundHandler *struct {
			Method string
			Params json.RawMessage
		}
	}
	if json.Unmarshal(raw, &view) != nil || view.OutboundHandler == nil || view.OutboundHandler.Method != "tag" {
		t.Fatalf("after the switch the server shows %s", raw)
	}
	if got := get(t, sbx, "http://any.example/after-switch"); got != `tag {"n":2}` {
		t.Fatalf("after the switch the sandbox got %q", got)
	}
	do(t, ctx, "the switched handler's decision",
		until(`[...document.querySelectorAll('#decisions td')].some((td) => td.textContent === '/after-switch')`),
		until(`[...document.querySelectorAll('#decisions td')].some((td) => td.textContent === 'tag')`),
	)

	// The HAR comes through fetch with the token as a header.
	dctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	progress := chromedp.Events(dctx, browser.DownloadProgress) // ends with dctx
	do(t, ctx, "the HAR download", chromedp.Click(inRow(`button[aria-label="Download HAR of sbx-1"]`)))
	guid := ""
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("waiting for the HAR download: %v\nthe page shows:\n%s", err, pageText(ctx))
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			guid = ev.GUID
			break
		}
	}
	har, err := os.ReadFile(filepath.Join(downloads, guid))
	if err != nil || !strings.Contains(string(har), `"version":"1.2"`) || !strings.Contains(string(har), "after-switch") {
		t.Fatalf("downloaded HAR: %v %.200s", err, har)
	}

	// The token stays in this tab's session storage: a reload does not ask
	// again, and it is never in a URL.
	do(t, ctx, "reloading",
		chromedp.Reload(),
		chromedp.WaitVisible(css(`#instances tr[data-instance="sbx-1"]`)),
		until(`document.getElementById("conn").dataset.state === "live"`),
	)
	asked := value(t, ctx, "the dialog", chromedp.Evaluate[bool](`document.getElementById("token-dialog").open`))
	href := value(t, ctx, "the location", chromedp.Location())
	if asked || strings.Contains(href, adminToken) {
		t.Fatalf("after a reload: asked again %v, location %q", asked, href)
	}

	if out := os.Getenv(screenshotEnv); out != "" {
		screenshot(t, ctx, srv, sbx, out)
	}
}

// screenshot fills the page with a little traffic and writes it as PNG.
func screenshot(t *testing.T, ctx context.Context, srv *apptest.Server, sbx *http.Client, out string) {
	other := apptest.Client(t, srv.Create(t, "agent-7", ""))
	do(t, ctx, "the second instance", chromedp.WaitVisible(css(`#instances tr[data-instance="agent-7"]`)))
	get(t, sbx, "http://api.github.com/repos/outbound-dev/outbound")
	get(t, other, "http://registry.npmjs.org/left-pad")
	get(t, other, "http://blocked.example/exfiltrate")
	get(t, other, "http://pypi.org/simple/requests/")
	do(t, ctx, "the traffic", until(`document.querySelectorAll('#decisions tbody tr').length >= 4`))
	png := value(t, ctx, "the screenshot", chromedp.FullScreenshot(100))
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%d bytes)\n", out, len(png))
}

// TestLiveViewWithoutAToken: with no --admin-token the page never asks, and
// the admin address itself leads to it.
func TestLiveViewWithoutAToken(t *testing.T) {
	script, _ := filepath.Abs("../../../testdata/live/policy.js")
	srv := apptest.Start(t, app.Config{Script: script})
	sbx := apptest.Client(t, srv.Create(t, "sbx-open", ""))
	ctx := newBrowser(t, t.TempDir())
	do(t, ctx, "the page",
		chromedp.Navigate("http://"+srv.AdminAddr().String()+"/"),
		chromedp.WaitVisible(css(`#instances tr[data-instance="sbx-open"]`)),
		until(`document.getElementById("conn").dataset.state === "live"`),
	)
	get(t, sbx, "http://any.example/open")
	do(t, ctx, "a decision",
		until(`[...document.querySelectorAll('#decisions td')].some((td) => td.textContent === '/open')`))
	asked := value(t, ctx, "the dialog", chromedp.Evaluate[bool](`document.getElementById("token-dialog").open || !document.getElementById("change-token").hidden`))
	if asked {
		t.Fatal("the page asked for a token the server does not need")
	}
}
