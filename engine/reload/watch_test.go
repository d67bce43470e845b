package reload

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/outbound-dev/outbound/internal/testlog"
)

// testDebounce leaves room for scheduling delays under -race on a busy
// machine, where a burst of writes must still be one burst.
const testDebounce = 80 * time.Millisecond

// quiet is how long tests wait for stray events after an action.
const quiet = 6 * testDebounce

type watchHarness struct {
	w      *watcher
	fires  atomic.Int32 // fires caused by events
	polls  atomic.Int32 // fires caused by poll ticks
	cancel context.CancelFunc
	done   chan struct{}
}

func startWatcher(t *testing.T, poll time.Duration, notify bool, files ...string) *watchHarness {
	t.Helper()
	h := &watchHarness{done: make(chan struct{})}
	h.w = newWatcher(testLogger(nil), testDebounce, poll, func(_ context.Context, lastEvent time.Time) {
		if !lastEvent.IsZero() {
			h.fires.Add(1)
		} else {
			h.polls.Add(1)
		}
	})
	h.w.notify = notify
	h.w.setFiles(files)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		defer close(h.done)
		h.w.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-h.done
	})
	<-h.w.ready // the test's first write must not precede the watch
	return h
}

// waitWatching waits until the backend watches dir (or no longer does).
func (h *watchHarness) waitWatching(t *testing.T, dir string, want bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got := false
		if l := h.w.watching.Load(); l != nil {
			got = slices.Contains(*l, dir)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watching %s = %v after 30s, want %v", dir, got, want)
		}
	}
}

// settle waits until no fire has happened for quiet, then returns the count.
func (h *watchHarness) settle(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last := h.fires.Load()
	for time.Now().Before(deadline) {
		time.Sleep(quiet)
		n := h.fires.Load()
		if n == last {
			return int(n)
		}
		last = n
	}
	t.Fatalf("events never settled")
	return 0
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWatcherSaves(t *testing.T) {
	tests := []struct {
		name string
		save func(t *testing.T, dir, file string)
		want int
	}{
		{"plain write", func(t *testing.T, dir, file string) { write(t, file, "v2") }, 1},
		{"burst of writes", nil, 1}, // see below
		{"atomic rename", func(t *testing.T, dir, file string) { renameSave(t, file, "v2") }, 1},
		{"vim style", func(t *testing.T, dir, file string) { vimSave(t, file, "v2") }, 1},
		{"droppings only", func(t *testing.T, dir, file string) {
			for _, n := range []string{".policy.js.swp", ".policy.js.swx", "policy.js~", "4913", ".#policy.js", "other.js"} {
				write(t, filepath.Join(dir, n), "x")
				os.Remove(filepath.Join(dir, n))
			}
		}, 0},
		{"chmod only", func(t *testing.T, dir, file string) {
			if err := os.Chmod(file, 0o600); err != nil {
				t.Fatal(err)
			}
		}, 0},
		{"configmap swap", func(t *testing.T, dir, file string) {}, 1}, // see below
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "policy.js")
			if tt.name == "configmap swap" {
				cm := newConfigMap(t, dir, map[string]string{"policy.js": "v1"})
				h := startWatcher(t, time.Hour, true, file)
				cm.update(t, map[string]string{"policy.js": "v2"})
				if got := h.settle(t); got != tt.want {
					t.Fatalf("fires = %d, want %d", got, tt.want)
				}
				return
			}
			write(t, file, "v1")
			h := startWatcher(t, time.Hour, true, file)
			if tt.name == "burst of writes" {
				// Ten writes 2 ms apart are one burst. A busy machine may
				// stall the writer between two of them for as long as the
				// debounce, which rightly ends a burst: each such stall
				// may add one fire, and no more.
				stalls := 0
				prev := time.Now()
				for i := range 10 {
					write(t, file, "v"+string(rune('a'+i)))
					if now := time.Now(); i > 0 && now.Sub(prev) >= testDebounce/2 {
						stalls++
					}
					prev = time.Now()
					time.Sleep(2 * time.Millisecond)
				}
				if got := h.settle(t); got < 1 || got > 1+stalls {
					t.Fatalf("fires = %d, want 1 (or up to %d: %d writes came %s or more apart)", got, 1+stalls, stalls, testDebounce/2)
				}
				return
			}
			tt.save(t, dir, file)
			if got := h.settle(t); got != tt.want {
				t.Fatalf("fires = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestWatcherDeleteRecreate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.js")
	write(t, file, "v1")
	h := startWatcher(t, time.Hour, true, file)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if got := h.settle(t); got != 1 {
		t.Fatalf("fires after delete = %d, want 1", got)
	}
	write(t, file, "v2")
	if got := h.settle(t); got != 2 {
		t.Fatalf("fires after recreate = %d, want 2", got)
	}
}

func TestWatcherMissingDirectoryAppears(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "later")
	file := filepath.Join(sub, ".dev.vars")
	h := startWatcher(t, 30*time.Millisecond, true, file)
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	h.waitWatching(t, sub, true) // a poll tick re-adds the directory
	write(t, file, "A=1")
	if got := h.settle(t); got != 1 {
		t.Fatalf("fires = %d, want 1", got)
	}
}

func TestWatcherSetFilesMovesWatches(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	fa, fb := filepath.Join(a, "a.js"), filepath.Join(b, "b.js")
	write(t, fa, "1")
	write(t, fb, "1")
	h := startWatcher(t, time.Hour, true, fa)
	h.w.setFiles([]string{fb})
	h.waitWatching(t, b, true) // run syncs the watches on the kick
	h.waitWatching(t, a, false)
	write(t, fa, "2")
	if got := h.settle(t); got != 0 {
		t.Fatalf("fires after writing an unwatched file = %d, want 0", got)
	}
	write(t, fb, "2")
	if got := h.settle(t); got != 1 {
		t.Fatalf("fires = %d, want 1", got)
	}
}

func TestWatcherBroad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.js")
	write(t, file, "v1")
	h := startWatcher(t, time.Hour, true, file)
	h.w.setBroad(true)
	write(t, filepath.Join(dir, "util.js"), "x")
	write(t, filepath.Join(dir, ".util.js.swp"), "x")
	if got := h.settle(t); got != 1 {
		t.Fatalf("fires = %d, want 1", got)
	}
}

func TestWatcherMaxWait(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.js")
	write(t, file, "v1")
	h := startWatcher(t, time.Hour, true, file)
	// Writes closer together than the debounce, for 3x maxWait.
	for end := time.Now().Add(3 * h.w.maxWait); time.Now().Before(end); {
		write(t, file, time.Now().String())
		time.Sleep(testDebounce / 5)
	}
	if got := h.fires.Load(); got < 2 {
		t.Fatalf("fires during a steady stream = %d, want at least 2", got)
	}
}

func TestWatcherPollingOnly(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.js")
	write(t, file, "v1")
	h := startWatcher(t, 20*time.Millisecond, false, file)
	write(t, file, "v2")
	for deadline := time.Now().Add(30 * time.Second); h.polls.Load() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("poll fires = %d after 30s, want several", h.polls.Load())
		}
	}
	if h.fires.Load() != 0 {
		t.Fatalf("event fires without notifications = %d", h.fires.Load())
	}
}

func TestEditorDropping(t *testing.T) {
	for name, want := range map[string]bool{
		"policy.js~": true, ".policy.js.swp": true, ".policy.js.swx": true, ".policy.js.swo": true,
		"4913": true, ".#policy.js": true,
		"policy.js": false, ".dev.vars": false, "..data": false, "swp": false, ".swp": false, "a.swp": false,
	} {
		if got := editorDropping(name); got != want {
			t.Errorf("editorDropping(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRelevantIgnoresUnrelated(t *testing.T) {
	w := newWatcher(slog.New(slog.DiscardHandler), testDebounce, time.Hour, nil)
	w.setFiles([]string{"/x/policy.js"})
	for _, tt := range []struct {
		ev   fsnotify.Event
		want bool
	}{
		{fsnotify.Event{Name: "/x/policy.js", Op: fsnotify.Write}, true},
		{fsnotify.Event{Name: "/x/policy.js", Op: fsnotify.Remove}, true},
		{fsnotify.Event{Name: "/x/policy.js", Op: fsnotify.Chmod}, false},
		{fsnotify.Event{Name: "/x/..data", Op: fsnotify.Create}, true},
		{fsnotify.Event{Name: "/x/other.js", Op: fsnotify.Write}, false},
		{fsnotify.Event{Name: "/x/policy.js~", Op: fsnotify.Create}, false},
	} {
		if got := w.relevant(tt.ev); got != tt.want {
			t.Errorf("relevant(%v) = %v, want %v", tt.ev, got, tt.want)
		}
	}
}

func TestDigest(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	write(t, a, "1")
	d1 := sumFiles([]string{a}, nil).digest()
	if sumFiles([]string{a}, nil).digest() != d1 {
		t.Fatal("digest of unchanged file changed")
	}
	write(t, a, "2")
	d2 := sumFiles([]string{a}, nil).digest()
	if d2 == d1 {
		t.Fatal("digest did not change with content")
	}
	os.Remove(a)
	d3 := sumFiles([]string{a}, nil).digest()
	if d3 == d2 || d3 == d1 {
		t.Fatal("digest of a missing file equals a present one")
	}
	write(t, a, "")
	if sumFiles([]string{a}, nil).digest() == d3 {
		t.Fatal("empty file hashes like a missing one")
	}
}

// renameSave writes a temporary file beside path and renames it over path,
// as most editors and config tools do.
func renameSave(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-1234")
	write(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// vimSave mimics vim with backupcopy=no: probe file 4913, swap file, the
// original renamed to a backup, a fresh file written, the backup removed.
func vimSave(t *testing.T, path, content string) {
	t.Helper()
	dir, base := filepath.Dir(path), filepath.Base(path)
	swp := filepath.Join(dir, "."+base+".swp")
	write(t, swp, "swap")
	probe := filepath.Join(dir, "4913")
	write(t, probe, "")
	os.Remove(probe)
	backup := path + "~"
	if err := os.Rename(path, backup); err != nil {
		t.Fatal(err)
	}
	write(t, path, content)
	os.Remove(backup)
	os.Remove(swp)
}

// configMap lays out a directory as the kubelet does for a ConfigMap volume:
// ..<timestamp>/ holds the files, ..data links to it, and each visible
// file links through ..data.
type configMap struct {
	dir string
	n   int
}

func newConfigMap(t *testing.T, dir string, files map[string]string) *configMap {
	t.Helper()
	cm := &configMap{dir: dir}
	cm.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return cm
}

// update publishes a new version the kubelet's way: a new timestamped
// directory, a ..data_tmp link renamed over ..data, the old directory removed.
func (cm *configMap) update(t *testing.T, files map[string]string) {
	t.Helper()
	cm.n++
	ts := "..2026_01_01_00_00_0" + string(rune('0'+cm.n%10)) + ".12345"
	if err := os.Mkdir(filepath.Join(cm.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		write(t, filepath.Join(cm.dir, ts, name), content)
	}
	old, _ := os.Readlink(filepath.Join(cm.dir, "..data"))
	tmp := filepath.Join(cm.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(cm.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(cm.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// testLogger captures slog output; buf may be nil.
func testLogger(buf *testlog.Buffer) *slog.Logger {
	if buf == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
