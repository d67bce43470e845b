package reload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/internal/testlog"
)

const testPoll = 200 * time.Millisecond

// fixture reads a script from testdata/reload, replacing each pair of
// placeholders with its value.
func fixture(t testing.TB, name string, kv ...string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "reload", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(kv...).Replace(string(data))
}

// testPool sizes pools small; the scripts never call fetch, and the
// transport refuses to dial if one does.
func testPool(log *slog.Logger) engine.PoolOptions {
	return engine.PoolOptions{Size: 2, Fetch: refuseFetch{}, Logger: log}
}

type refuseFetch struct{}

func (refuseFetch) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("fetch is not used by reload tests")
}

func versioned(t testing.TB, v int) string {
	return fixture(t, "versioned.js", "__V__", fmt.Sprint(v))
}

// harness is a running Reloader with captured logs and OnLoad calls.
type harness struct {
	r        *Reloader
	logs     *testlog.Buffer
	mu       sync.Mutex
	onLoad   []error // one entry per load attempt after New
	loadOK   atomic.Int32
	loadFail atomic.Int32
}

func start(t testing.TB, opts Options, tune ...func(*Reloader)) *harness {
	t.Helper()
	h := &harness{logs: &testlog.Buffer{}}
	if opts.Debounce == 0 {
		opts.Debounce = testDebounce
	}
	if opts.Poll == 0 {
		opts.Poll = testPoll
	}
	opts.Logger = testLogger(h.logs)
	opts.Pool = testPool(opts.Logger)
	ready := false
	opts.OnLoad = func(gen int, err error) {
		if !ready {
			return
		}
		h.mu.Lock()
		h.onLoad = append(h.onLoad, err)
		h.mu.Unlock()
		if err == nil {
			h.loadOK.Add(1)
		} else {
			h.loadFail.Add(1)
		}
	}
	r, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ready = true // New held the load lock; later calls come from Run
	h.r = r
	for _, f := range tune {
		f(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	<-r.w.ready // writes must not precede the watches
	return h
}

// get invokes the default class's outbound handler on the current
// generation with the current env.
func (h *harness) get(t testing.TB, path string) (body string, gen int) {
	t.Helper()
	body, gen, err := invoke(h.r, path)
	if err != nil {
		t.Fatal(err)
	}
	return body, gen
}

func invoke(r *Reloader, path string) (string, int, error) {
	g, release := r.Acquire()
	defer release()
	if g == nil {
		return "", 0, errors.New("no generation")
	}
	req := httptest.NewRequest("GET", "http://example.com/"+path, nil)
	resp, err := g.Pool.Invoke(context.Background(), engine.Call{
		Class:   "default",
		Handler: chain.HandlerRef{Kind: chain.HandlerOutbound},
		Request: req,
		Env:     r.Env(),
	})
	if err != nil {
		return "", g.N, fmt.Errorf("invoke generation %d: %w", g.N, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", g.N, fmt.Errorf("read body of generation %d: %w", g.N, err)
	}
	if resp.StatusCode != 200 {
		return "", g.N, fmt.Errorf("generation %d answered %d: %s", g.N, resp.StatusCode, b)
	}
	return string(b), g.N, nil
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quiesce waits out any stray events and at least one poll tick.
func quiesce() { time.Sleep(testPoll + quiet) }

func (h *harness) waitGen(t testing.TB, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("generation %d", n), func() bool { return h.r.Status().Generation >= n })
}

func TestSavesReloadOnce(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) (script string, save func())
	}{
		{"plain save", func(t *testing.T, dir string) (string, func()) {
			p := filepath.Join(dir, "policy.js")
			write(t, p, versioned(t, 1))
			return p, func() { write(t, p, versioned(t, 2)) }
		}},
		{"atomic rename save", func(t *testing.T, dir string) (string, func()) {
			p := filepath.Join(dir, "policy.js")
			write(t, p, versioned(t, 1))
			return p, func() { renameSave(t, p, versioned(t, 2)) }
		}},
		{"vim style save", func(t *testing.T, dir string) (string, func()) {
			p := filepath.Join(dir, "policy.js")
			write(t, p, versioned(t, 1))
			return p, func() { vimSave(t, p, versioned(t, 2)) }
		}},
		{"configmap symlink swap", func(t *testing.T, dir string) (string, func()) {
			cm := newConfigMap(t, dir, map[string]string{"policy.js": versioned(t, 1)})
			return filepath.Join(dir, "policy.js"), func() {
				cm.update(t, map[string]string{"policy.js": versioned(t, 2)})
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script, save := tt.setup(t, t.TempDir())
			h := start(t, Options{Path: script})
			if body, gen := h.get(t, ""); body != "1:1" || gen != 1 {
				t.Fatalf("before save: %q from generation %d", body, gen)
			}
			save()
			h.waitGen(t, 2)
			quiesce()
			if st := h.r.Status(); st.Generation != 2 || st.Err != nil {
				t.Fatalf("after save: status %+v, want generation 2 and no error", st)
			}
			if ok, fail := h.loadOK.Load(), h.loadFail.Load(); ok != 1 || fail != 0 {
				t.Fatalf("loads after save: %d good, %d failed; want exactly 1 good", ok, fail)
			}
			if body, gen := h.get(t, ""); body != "2:2" || gen != 2 {
				t.Fatalf("after save: %q from generation %d", body, gen)
			}
		})
	}
}

func TestUnchangedContentSkipped(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	envFile := filepath.Join(dir, ".dev.vars")
	write(t, p, versioned(t, 1))
	write(t, envFile, "K=1\n")
	h := start(t, Options{Path: p, EnvFile: envFile})
	env := h.r.Env()
	write(t, p, versioned(t, 1))    // same bytes, new mtime
	renameSave(t, envFile, "K=1\n") // same bytes, new inode
	quiesce()
	if g := h.r.Status().Generation; g != 1 || h.loadOK.Load() != 0 {
		t.Fatalf("identical content reloaded: generation %d", g)
	}
	if h.r.Env() != env {
		t.Fatal("identical env file rebuilt the env")
	}
}

func TestDeleteThenRecreate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, versioned(t, 1))
	h := start(t, Options{Path: p})
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the missing script to be reported", func() bool { return h.r.Status().Err != nil })
	if err := h.r.Status().Err; !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("status error %v, want not-exist", err)
	}
	if body, _ := h.get(t, ""); body != "1:1" {
		t.Fatalf("while deleted: %q, want the old generation", body)
	}
	quiesce()
	if n := h.loadFail.Load(); n != 1 {
		t.Fatalf("failed loads while deleted = %d, want 1 (no retry of unchanged files)", n)
	}
	write(t, p, versioned(t, 2))
	h.waitGen(t, 2)
	quiesce()
	if st := h.r.Status(); st.Generation != 2 || st.Err != nil {
		t.Fatalf("after recreate: status %+v", st)
	}
	if n := h.loadOK.Load(); n != 1 {
		t.Fatalf("good loads = %d, want 1", n)
	}
	if body, _ := h.get(t, ""); body != "2:2" {
		t.Fatalf("after recreate: %q", body)
	}
}

var posError = regexp.MustCompile(`policy\.js:4:\d+: \S`)

func TestBrokenSaveKeepsServing(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, versioned(t, 1))
	h := start(t, Options{Path: p})

	write(t, p, fixture(t, "broken.js"))
	waitFor(t, "the load error", func() bool { return h.r.Status().Err != nil })
	st := h.r.Status()
	if !posError.MatchString(st.Err.Error()) {
		t.Fatalf("status error %q lacks file:line:col", st.Err)
	}
	if st.Generation != 1 {
		t.Fatalf("generation after a broken save = %d, want 1", st.Generation)
	}
	if body, gen := h.get(t, ""); body != "1:1" || gen != 1 {
		t.Fatalf("after a broken save: %q from generation %d", body, gen)
	}
	// The status is published before the log line is written: poll.
	for deadline := time.Now().Add(10 * time.Second); !posError.MatchString(h.logs.String()) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !posError.MatchString(h.logs.String()) {
		t.Fatalf("log lacks the file:line:col error:\n%s", h.logs)
	}
	quiesce()
	if n := h.loadFail.Load(); n != 1 {
		t.Fatalf("failed loads = %d, want 1", n)
	}

	write(t, p, versioned(t, 2))
	h.waitGen(t, 2)
	if st := h.r.Status(); st.Err != nil {
		t.Fatalf("error not cleared by a good save: %v", st.Err)
	}
	if body, _ := h.get(t, ""); body != "2:2" {
		t.Fatalf("after the fix: %q", body)
	}
}

func TestNewFails(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, fixture(t, "broken.js"))
	if r, err := New(context.Background(), Options{Path: p, Pool: testPool(nil)}); err == nil {
		r.Close()
		t.Fatal("New accepted a broken script")
	} else if !posError.MatchString(err.Error()) {
		t.Fatalf("New error %q lacks file:line:col", err)
	}

	write(t, p, versioned(t, 1))
	envFile := filepath.Join(dir, ".dev.vars")
	write(t, envFile, "GOOD=1\nBAD KEY=hunter2\n")
	r, err := New(context.Background(), Options{Path: p, EnvFile: envFile, Pool: testPool(nil)})
	if err == nil {
		r.Close()
		t.Fatal("New accepted an invalid env file")
	}
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("New env error %q: want the line, never the value", err)
	}
}

func TestImportedFileChange(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	lib := filepath.Join(dir, "lib", "version.js")
	if err := os.Mkdir(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, p, fixture(t, "importer.js"))
	write(t, lib, fixture(t, "lib/version.js"))
	h := start(t, Options{Path: p})
	if body, _ := h.get(t, ""); body != "lib-1" {
		t.Fatalf("before: %q", body)
	}
	g, release := h.r.Acquire()
	inputs := g.Info.Inputs
	release()
	if !slices.Contains(inputs, lib) {
		t.Fatalf("inputs %q lack %s", inputs, lib)
	}

	renameSave(t, lib, `export const VERSION = "lib-2";`)
	h.waitGen(t, 2)
	if body, _ := h.get(t, ""); body != "lib-2" {
		t.Fatalf("after editing the import: %q", body)
	}

	// The script now imports a file in another directory; the watch set
	// must follow.
	other := filepath.Join(t.TempDir(), "other.js")
	write(t, other, `export const VERSION = "other-1";`)
	write(t, p, strings.Replace(fixture(t, "importer.js"), "./lib/version.js", other, 1))
	h.waitGen(t, 3)
	write(t, other, `export const VERSION = "other-2";`)
	h.waitGen(t, 4)
	if body, _ := h.get(t, ""); body != "other-2" {
		t.Fatalf("after editing the new import: %q", body)
	}
	// The old import is no longer an input: editing it reloads nothing.
	write(t, lib, `export const VERSION = "lib-3";`)
	quiesce()
	if g := h.r.Status().Generation; g != 4 {
		t.Fatalf("generation %d after editing a dropped import, want 4", g)
	}
}

func TestMissingImportCreatedLater(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, versioned(t, 1))
	h := start(t, Options{Path: p})
	write(t, p, strings.Replace(fixture(t, "importer.js"), "./lib/version.js", "./later.js", 1))
	waitFor(t, "the unresolved import error", func() bool { return h.r.Status().Err != nil })
	write(t, filepath.Join(dir, "later.js"), `export const VERSION = "later";`)
	h.waitGen(t, 2)
	if body, _ := h.get(t, ""); body != "later" {
		t.Fatalf("after creating the import: %q", body)
	}
}

func TestCompileHook(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, fixture(t, "hosts.js", "__HOST__", "a.example"))
	compile := func(info *engine.ScriptInfo) (any, error) {
		c := info.Class("default")
		if c == nil {
			return nil, errors.New("no default class")
		}
		if slices.Contains(c.AllowedHosts, "invalid[") {
			return nil, fmt.Errorf("%s: allowedHosts: invalid pattern", info.Path)
		}
		return slices.Clone(c.AllowedHosts), nil
	}
	h := start(t, Options{Path: p, Compile: compile})
	policy := func() any {
		g, release := h.r.Acquire()
		defer release()
		return g.Policy
	}
	if got := policy(); !slices.Equal(got.([]string), []string{"a.example"}) {
		t.Fatalf("policy %v", got)
	}
	write(t, p, fixture(t, "hosts.js", "__HOST__", "invalid["))
	waitFor(t, "the compile error", func() bool { return h.r.Status().Err != nil })
	if got := policy(); !slices.Equal(got.([]string), []string{"a.example"}) || h.r.Status().Generation != 1 {
		t.Fatalf("a failed Compile replaced the generation: policy %v", got)
	}
	write(t, p, fixture(t, "hosts.js", "__HOST__", "b.example"))
	h.waitGen(t, 2)
	if got := policy(); !slices.Equal(got.([]string), []string{"b.example"}) {
		t.Fatalf("policy %v", got)
	}
}

func TestEnvRotation(t *testing.T) {
	const (
		oldSecret = "sk-old-7f3a9c"
		newSecret = "sk-new-b81e44"
		gone      = "gone-value-51d0"
		fromFile  = "file-value-0c2d"
	)
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, fixture(t, "env.js"))
	envFile := filepath.Join(dir, ".dev.vars")
	write(t, envFile, "API_TOKEN="+oldSecret+"\nOLD_KEY="+gone+"\nOVERRIDDEN="+fromFile+"\n")
	h := start(t, Options{Path: p, EnvFile: envFile, Vars: map[string]string{"OVERRIDDEN": "from-var", "PLAIN": "p"}})

	if body, _ := h.get(t, "API_TOKEN"); body != oldSecret {
		t.Fatalf("API_TOKEN = %q", body)
	}
	if body, _ := h.get(t, "OVERRIDDEN"); body != "from-var" {
		t.Fatalf("--var did not override the file: %q", body)
	}
	env1 := h.r.Env()

	renameSave(t, envFile, "API_TOKEN="+newSecret+"\nOVERRIDDEN=other-file-value\nNEW_KEY=n\n")
	waitFor(t, "the rotated env", func() bool { return h.r.Env() != env1 })
	env2 := h.r.Env()
	if got := env2.Vars["API_TOKEN"]; got != newSecret {
		t.Fatalf("API_TOKEN after rotation = %q", got)
	}
	if body, _ := h.get(t, "API_TOKEN"); body != newSecret {
		t.Fatalf("handler saw API_TOKEN = %q after rotation", body)
	}
	if body, _ := h.get(t, "OLD_KEY"); body != "<unset>" {
		t.Fatalf("removed key still visible: %q", body)
	}
	if _, ok := env2.Vars["OLD_KEY"]; ok {
		t.Fatal("removed key still in Env")
	}
	if env2.Vars["OVERRIDDEN"] != "from-var" || env2.Vars["PLAIN"] != "p" || env2.Vars["NEW_KEY"] != "n" {
		t.Fatalf("vars after rotation: keys %v", slices.Sorted(maps.Keys(env2.Vars)))
	}
	if env1.Vars["API_TOKEN"] != oldSecret {
		t.Fatal("the old Env was mutated")
	}
	quiesce()
	if g := h.r.Status().Generation; g != 1 || h.loadOK.Load() != 0 {
		t.Fatalf("an env change recompiled the script: generation %d", g)
	}

	// A broken env file keeps the last good env and names only the line.
	// (Saved whole: a file caught half written is just another valid env.)
	renameSave(t, envFile, "API_TOKEN="+newSecret+"\nbroken "+gone+"\n")
	waitFor(t, "the env error", func() bool { return h.r.Status().EnvErr != nil })
	if err := h.r.Status().EnvErr; !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("env error %q lacks the line", err)
	}
	if h.r.Env() != env2 {
		t.Fatal("a broken env file replaced the env")
	}
	// Deleting the file leaves only --var values.
	if err := os.Remove(envFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the env without a file", func() bool { return h.r.Env().Vars["API_TOKEN"] == "" })
	if st := h.r.Status(); st.EnvErr != nil {
		t.Fatalf("missing env file reported as error: %v", st.EnvErr)
	}
	if got := h.r.Env().Vars; len(got) != 2 || got["OVERRIDDEN"] != "from-var" || got["PLAIN"] != "p" {
		t.Fatalf("vars without an env file: keys %v", slices.Sorted(maps.Keys(got)))
	}

	logs := h.logs.String()
	for _, secret := range []string{oldSecret, newSecret, gone, fromFile, "other-file-value"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain the value %q:\n%s", secret, logs)
		}
	}
	for _, name := range []string{"API_TOKEN", "OLD_KEY", "NEW_KEY"} {
		if !strings.Contains(logs, name) {
			t.Fatalf("logs do not name the changed key %s:\n%s", name, logs)
		}
	}
}

func TestEnvFileAppearsLater(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, fixture(t, "env.js"))
	envFile := filepath.Join(dir, "conf", ".dev.vars") // the directory does not exist yet
	h := start(t, Options{Path: p, EnvFile: envFile})
	if len(h.r.Env().Vars) != 0 {
		t.Fatalf("vars without an env file: %v", h.r.Env().Vars)
	}
	if err := os.Mkdir(filepath.Dir(envFile), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, envFile, "TOKEN=t1\n")
	waitFor(t, "the new env file", func() bool { return h.r.Env().Vars["TOKEN"] == "t1" })
	if body, _ := h.get(t, "TOKEN"); body != "t1" {
		t.Fatalf("TOKEN = %q", body)
	}
}

func TestPollingFallback(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, versioned(t, 1))
	envFile := filepath.Join(dir, ".dev.vars")
	write(t, envFile, "K=1\n")
	h := start(t, Options{Path: p, EnvFile: envFile, Poll: 50 * time.Millisecond},
		func(r *Reloader) { r.w.notify = false })
	write(t, p, versioned(t, 2))
	write(t, envFile, "K=2\n")
	h.waitGen(t, 2)
	waitFor(t, "the polled env", func() bool { return h.r.Env().Vars["K"] == "2" })
	time.Sleep(200 * time.Millisecond)
	if g := h.r.Status().Generation; g != 2 {
		t.Fatalf("generation %d after one change seen by polling, want 2", g)
	}
}

func TestOldGenerationsRetire(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, versioned(t, 1))
	h := start(t, Options{Path: p})

	held, release := h.r.Acquire() // an in-flight request on generation 1
	for v := 2; v <= 4; v++ {
		if err := h.r.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Generations 2 and 3 had no requests: retired at once.
	waitFor(t, "two retirements", func() bool { return h.r.retired.Load() == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := h.r.retired.Load(); n != 2 {
		t.Fatalf("retired %d generations while generation 1 is in use, want 2", n)
	}
	// The held generation still serves its request.
	req := httptest.NewRequest("GET", "http://example.com/", nil)
	resp, err := held.Pool.Invoke(context.Background(), engine.Call{Class: "default", Request: req, Env: h.r.Env()})
	if err != nil {
		t.Fatalf("the held generation no longer serves: %v", err)
	}
	resp.Body.Close()
	release()
	release() // a second release is harmless
	waitFor(t, "the held generation to retire", func() bool { return h.r.retired.Load() == 3 })
	// Retired really means closed.
	if _, err := held.Pool.Invoke(context.Background(), engine.Call{Class: "default", Request: req, Env: h.r.Env()}); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Invoke on a retired generation: %v, want engine.ErrClosed", err)
	}
}

func TestCloseWaitsForRequests(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, versioned(t, 1))
	r, err := New(context.Background(), Options{Path: p, Pool: testPool(nil)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	<-r.w.ready

	_, release := r.Acquire()
	closed := make(chan struct{})
	go func() {
		r.Close()
		close(closed)
	}()
	if err := <-runDone; err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a request held a generation")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	<-closed
	if g, _ := r.Acquire(); g != nil {
		t.Fatal("Acquire after Close returned a generation")
	}
	if n := r.retired.Load(); n != 1 {
		t.Fatalf("retired %d after Close, want 1", n)
	}
	if err := r.Reload(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reload after Close: %v", err)
	}
	if err := r.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
}

// TestRewritesUnderLoad rewrites the script 50 times with plain writes
// while clients send requests without pause. Every request must succeed,
// and each must come from a single script version.
func TestRewritesUnderLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(t, p, versioned(t, 0))
	h := start(t, Options{Path: p})

	const rewrites = 50
	stop := make(chan struct{})
	var (
		wg              sync.WaitGroup
		total, failed   atomic.Int64
		mixed, backward atomic.Int64
		firstErr        atomic.Value
	)
	for range 3 {
		wg.Go(func() {
			last := -1
			for {
				select {
				case <-stop:
					return
				default:
				}
				body, _, err := invoke(h.r, "")
				total.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				var a, b int
				if _, err := fmt.Sscanf(body, "%d:%d", &a, &b); err != nil || a != b {
					mixed.Add(1)
					firstErr.CompareAndSwap(nil, "mixed response "+body)
					continue
				}
				if a < last {
					backward.Add(1)
				}
				last = a
			}
		})
	}
	for v := 1; v <= rewrites; v++ {
		time.Sleep(testDebounce + 20*time.Millisecond)
		write(t, p, versioned(t, v))
		// On a busy machine loads can lag behind the writes and merge
		// them; wait for this one, so that every rewrite is a reload.
		waitFor(t, fmt.Sprintf("generation %d", v+1), func() bool { return h.r.Status().Generation >= v+1 })
	}
	want := fmt.Sprintf("%d:%d", rewrites, rewrites)
	waitFor(t, "the last version", func() bool {
		body, _, err := invoke(h.r, "")
		return err == nil && body == want
	})
	close(stop)
	wg.Wait()
	gens := h.r.Status().Generation
	t.Logf("%d requests across %d generations during %d rewrites", total.Load(), gens, rewrites)
	if failed.Load() != 0 || mixed.Load() != 0 || backward.Load() != 0 {
		t.Fatalf("%d failed, %d mixed, %d went back a version; first: %v",
			failed.Load(), mixed.Load(), backward.Load(), firstErr.Load())
	}
	if gens < rewrites/2 {
		t.Fatalf("only %d generations for %d spaced rewrites", gens, rewrites)
	}
}

// BenchmarkReloadLatency measures the time from a file write to the first
// response from the new generation, with the default 100ms debounce.
func BenchmarkReloadLatency(b *testing.B) {
	dir := b.TempDir()
	p := filepath.Join(dir, "policy.js")
	write(b, p, versioned(b, 0))
	h := start(b, Options{Path: p, Debounce: 100 * time.Millisecond, Poll: time.Hour})
	var lat []time.Duration
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		want := fmt.Sprintf("%d:%d", i, i)
		content := versioned(b, i)
		begin := time.Now()
		write(b, p, content)
		for {
			body, _, err := invoke(h.r, "")
			if err != nil {
				b.Fatal(err)
			}
			if body == want {
				break
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(begin))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
