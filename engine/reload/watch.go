package reload

import (
	"context"
	"log/slog"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher turns filesystem activity around a set of files into debounced
// calls of fire, plus a call on every poll tick for filesystems that send
// no notifications. It watches the files' directories, never the files:
// editors replace files by rename, which would orphan a watch on the file.
type watcher struct {
	log      *slog.Logger
	debounce time.Duration
	maxWait  time.Duration // a steady stream of events still fires this often
	poll     time.Duration
	notify   bool // false: polling only
	// fire is called on the run goroutine. lastEvent is the time of the
	// newest event of the burst, or zero for a poll tick.
	fire func(ctx context.Context, lastEvent time.Time)

	kick  chan struct{} // setFiles asks run to sync the watched directories
	ready chan struct{} // closed once run has set up its first watches
	// watching is the directories the backend watches after the last
	// sync, for tests that must not act before a watch is in place.
	watching atomic.Pointer[[]string]

	mu    sync.Mutex
	files map[string]bool // absolute paths of interest, symlinks resolved too
	dirs  map[string]bool // their directories
	broad bool            // every non-dropping event counts (after a failed load)
}

func newWatcher(log *slog.Logger, debounce, poll time.Duration, fire func(context.Context, time.Time)) *watcher {
	return &watcher{
		log:      log,
		debounce: debounce,
		maxWait:  10 * debounce,
		poll:     poll,
		notify:   true,
		fire:     fire,
		kick:     make(chan struct{}, 1),
		ready:    make(chan struct{}),
		files:    map[string]bool{},
		dirs:     map[string]bool{},
	}
}

// setFiles replaces the set of watched files. Paths must be absolute.
func (w *watcher) setFiles(paths []string) {
	files := map[string]bool{}
	dirs := map[string]bool{}
	add := func(p string) {
		p = filepath.Clean(p)
		files[p] = true
		dirs[filepath.Dir(p)] = true
	}
	for _, p := range paths {
		add(p)
		// A symlinked file changes when its target does; follow the chain
		// so an edit of the target is an event too.
		if real, err := filepath.EvalSymlinks(p); err == nil && real != p {
			add(real)
		}
	}
	w.mu.Lock()
	changed := !maps.Equal(dirs, w.dirs)
	w.files, w.dirs = files, dirs
	w.mu.Unlock()
	if changed {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// setBroad makes every event in a watched directory count, not only those
// naming a watched file. After a failed load the bundle's new imports are
// unknown, so creating a missing import must still trigger a retry.
func (w *watcher) setBroad(b bool) {
	w.mu.Lock()
	w.broad = b
	w.mu.Unlock()
}

// relevant filters events by name.
func (w *watcher) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	base := filepath.Base(ev.Name)
	if editorDropping(base) {
		return false
	}
	// Kubernetes ConfigMap volumes swap a "..data" symlink to a new
	// timestamped directory; the visible files are symlinks through it.
	if base == "..data" {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.broad || w.files[filepath.Clean(ev.Name)]
}

// editorDropping reports names editors create beside a file being saved:
// backups (x~), vim swap files (.x.swp, .x.swx, ...), vim's write probe
// (4913) and emacs lock files (.#x).
func editorDropping(base string) bool {
	switch {
	case strings.HasSuffix(base, "~"), base == "4913", strings.HasPrefix(base, ".#"):
		return true
	case strings.HasPrefix(base, "."):
		ext := filepath.Ext(base)
		return len(ext) == 4 && len(base) > 4 && strings.HasPrefix(ext, ".sw")
	}
	return false
}

// run watches until ctx is done. Without a working notification backend it
// still polls.
func (w *watcher) run(ctx context.Context) {
	var (
		fsw    *fsnotify.Watcher
		events <-chan fsnotify.Event
		errs   <-chan error
	)
	if w.notify {
		var err error
		fsw, err = fsnotify.NewWatcher()
		if err != nil {
			w.log.Warn("file notifications unavailable; polling only", "err", err, "poll", w.poll)
		} else {
			defer fsw.Close()
			events, errs = fsw.Events, fsw.Errors
		}
	}
	w.sync(fsw)
	close(w.ready)

	ticker := time.NewTicker(w.poll)
	defer ticker.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var (
		pending     bool
		first, last time.Time // first and newest event of the pending burst
	)
	arm := func() {
		now := time.Now()
		if !pending {
			pending, first = true, now
		}
		last = now
		d := w.debounce
		if limit := first.Add(w.maxWait).Sub(now); limit < d {
			d = max(limit, 0)
		}
		timer.Reset(d)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if w.relevant(ev) {
				arm()
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Usually a queue overflow: events were lost, so look.
			w.log.Warn("file watcher error", "err", err)
			arm()
		case <-timer.C:
			pending = false
			w.fire(ctx, last)
			w.sync(fsw)
		case <-ticker.C:
			w.fire(ctx, time.Time{})
			w.sync(fsw)
		case <-w.kick:
			w.sync(fsw)
		}
	}
}

// sync makes the watched directories match the wanted set. A directory
// that does not exist yet is retried on the next sync (every poll tick);
// one deleted while watched has already been dropped by the backend.
func (w *watcher) sync(fsw *fsnotify.Watcher) {
	if fsw == nil {
		return
	}
	w.mu.Lock()
	want := maps.Clone(w.dirs)
	w.mu.Unlock()
	have := map[string]bool{}
	for _, d := range fsw.WatchList() {
		have[d] = true
	}
	for d := range have {
		if !want[d] {
			if err := fsw.Remove(d); err != nil {
				w.log.Debug("unwatch directory", "dir", d, "err", err)
			}
		}
	}
	for d := range want {
		if !have[d] {
			if err := fsw.Add(d); err != nil {
				w.log.Debug("watch directory", "dir", d, "err", err)
			}
		}
	}
	now := fsw.WatchList()
	w.watching.Store(&now)
}
