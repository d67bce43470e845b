package reload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/engine/dotenv"
	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/jsapi"
)

// Options configures a Reloader.
type Options struct {
	Path string // the policy script
	Load engine.LoadOptions
	Pool engine.PoolOptions
	// Compile is extra per-generation compilation and validation, such as
	// the policy layer compiling host patterns. Its result is the
	// generation's Policy; an error is a load error. Optional.
	Compile func(*engine.ScriptInfo) (any, error)
	// EnvFile is a dotenv file of vars and secrets; "" for none. A missing
	// file means no file vars, and a file that appears later is picked up.
	EnvFile string
	Vars    map[string]string   // --var values; they override env-file values
	KV      map[string]store.KV // KV bindings; fixed for the Reloader's life
	// Debounce is how long the watcher waits for a burst of file events to
	// end before looking at the files. Default 100ms.
	Debounce time.Duration
	// Poll is the interval of the content-hash polling fallback, for
	// filesystems without notifications. Default 2s.
	Poll   time.Duration
	Logger *slog.Logger
	// OnLoad is called after every script load attempt, with the new
	// generation or, on failure, the one still serving. It runs with the
	// Reloader's load lock held: it must not call Reload. Optional.
	OnLoad func(gen int, err error)
}

// Generation is one successfully loaded script. It is immutable; a reload
// builds a new one.
type Generation struct {
	N      int // 1 for the first load, +1 on every successful load
	Info   *engine.ScriptInfo
	Pool   *engine.Pool
	Policy any // Options.Compile's result
}

// Status is the state of the script and env file.
type Status struct {
	Path       string // absolute path of the script
	Generation int    // the generation serving
	// Err is the last failed script load, as "file:line:col: message" when
	// the engine knows the position; nil after a good load.
	Err error
	// EnvErr is the last failed env file parse (line numbers only, never
	// values); nil after a good parse. The previous env keeps serving.
	EnvErr error
}

// ErrClosed is returned by Run and Reload after Close.
var ErrClosed = errors.New("reload: reloader closed")

// Reloader serves the current script generation and env, and replaces them
// when their files change.
type Reloader struct {
	opts    Options
	path    string // absolute script path
	envPath string // absolute env file path, or ""
	kv      map[string]store.KV
	log     *slog.Logger
	w       *watcher

	cur atomic.Pointer[genRef]
	env atomic.Pointer[jsapi.Env]

	// live counts generations whose pool is not closed yet; Close waits
	// for it so no pool outlives the Reloader.
	live    sync.WaitGroup
	retired atomic.Int64 // generations whose pool was closed; for tests

	// loadMu serialises loads and env updates, and guards the fields below.
	loadMu      sync.Mutex
	closed      bool
	lastGen     int
	failed      bool      // the last script load failed
	failedAt    time.Time // when that load started
	scriptFiles []string  // the script and every bundle input of the serving generation
	scriptSum   [sha256.Size]byte
	envSum      [sha256.Size]byte

	statusMu sync.Mutex
	status   Status

	runMu   sync.Mutex
	running bool
	stop    context.CancelFunc
	runDone chan struct{}
	closing bool
}

// genRef counts the users of a generation: one for being current, one per
// Acquire. The pool closes when the count drops to zero.
type genRef struct {
	gen  *Generation
	refs atomic.Int64
	r    *Reloader
}

func (g *genRef) tryAcquire() bool {
	for {
		n := g.refs.Load()
		if n <= 0 {
			return false // retired: the caller reloads r.cur, already swapped
		}
		if g.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (g *genRef) release() {
	if g.refs.Add(-1) != 0 {
		return
	}
	// The last user is done. Close off the request path: Pool.Close stops
	// the isolate loops, and the caller releasing should not wait for it.
	go func() {
		defer g.r.live.Done()
		g.gen.Pool.Close()
		g.r.retired.Add(1)
		g.r.log.Debug("script generation retired", "generation", g.gen.N)
	}()
}

// New loads the script and env file. The first load must succeed. Call Run
// to watch for changes and Close to release everything.
func New(ctx context.Context, opts Options) (*Reloader, error) {
	if opts.Path == "" {
		return nil, errors.New("reload: no script path")
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.Poll <= 0 {
		opts.Poll = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	path, err := filepath.Abs(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("reload: script path %s: %w", opts.Path, err)
	}
	r := &Reloader{
		opts: opts,
		path: path,
		kv:   maps.Clone(opts.KV),
		log:  opts.Logger,
	}
	if opts.EnvFile != "" {
		if r.envPath, err = filepath.Abs(opts.EnvFile); err != nil {
			return nil, fmt.Errorf("reload: env file path %s: %w", opts.EnvFile, err)
		}
	}
	r.status.Path = path
	r.w = newWatcher(r.log, opts.Debounce, opts.Poll, r.check)
	vars := maps.Clone(opts.Vars)
	if vars == nil {
		vars = map[string]string{}
	}
	r.env.Store(&jsapi.Env{Vars: vars, KV: r.kv})

	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if err := r.updateEnv(true); err != nil {
		return nil, err
	}
	if err := r.loadScript(ctx, nil); err != nil {
		return nil, err
	}
	return r, nil
}

// Acquire returns the current generation and a release function to call
// when the request is done with it (once; later calls do nothing). A
// request keeps its generation even if a reload swaps in another meanwhile.
// After Close, Acquire returns nil.
func (r *Reloader) Acquire() (*Generation, func()) {
	for {
		g := r.cur.Load()
		if g == nil {
			return nil, func() {}
		}
		if g.tryAcquire() {
			var once sync.Once
			return g.gen, func() { once.Do(g.release) }
		}
	}
}

// Env returns the current env. Every change builds a new *jsapi.Env, so a
// runtime may cache per pointer.
func (r *Reloader) Env() *jsapi.Env { return r.env.Load() }

// Status reports the serving generation and the last errors.
func (r *Reloader) Status() Status {
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	return r.status
}

// Reload recompiles the script and rereads the env file now, whether or not
// they changed. It returns the load errors; the last good generation and
// env keep serving on failure.
func (r *Reloader) Reload(ctx context.Context) error {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if r.closed {
		return ErrClosed
	}
	return errors.Join(r.loadScript(ctx, nil), r.updateEnv(true))
}

// Run watches the script's files and the env file until ctx is done or
// Close is called. It may be called once.
func (r *Reloader) Run(ctx context.Context) error {
	r.runMu.Lock()
	if r.closing {
		r.runMu.Unlock()
		return ErrClosed
	}
	if r.running {
		r.runMu.Unlock()
		return errors.New("reload: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.running, r.stop, r.runDone = true, cancel, make(chan struct{})
	done := r.runDone
	r.runMu.Unlock()
	defer close(done)

	r.w.run(ctx)
	return nil
}

// Close stops Run, then waits for every in-flight request to release its
// generation and for every pool to close.
func (r *Reloader) Close() error {
	r.runMu.Lock()
	if r.closing {
		r.runMu.Unlock()
		return nil
	}
	r.closing = true
	stop, done := r.stop, r.runDone
	r.runMu.Unlock()
	if stop != nil {
		stop()
		<-done
	}

	r.loadMu.Lock()
	r.closed = true
	g := r.cur.Swap(nil)
	r.loadMu.Unlock()
	if g != nil {
		g.release()
	}
	r.live.Wait()
	return nil
}

// check is the watcher's callback: reload whatever changed. lastEvent is
// the newest file event that led here, zero for a poll tick.
func (r *Reloader) check(ctx context.Context, lastEvent time.Time) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if r.closed {
		return
	}
	sums := sumFiles(r.scriptFiles, nil)
	// After a failed load, an event newer than that load retries even with
	// unchanged hashes: the broken version may import a file that did not
	// exist yet, which only the new bundle would name.
	retry := r.failed && lastEvent.After(r.failedAt)
	if sums.digest() != r.scriptSum || retry {
		_ = r.loadScript(ctx, sums) // logged and in Status
	}
	_ = r.updateEnv(false) // logged and in Status
}

// loadScript builds a new generation and swaps it in. pre holds content
// hashes taken before the build, so a save racing with the build leaves a
// digest that differs from the files and is picked up next time.
// r.loadMu must be held.
func (r *Reloader) loadScript(ctx context.Context, pre fileSums) error {
	if pre == nil {
		pre = sumFiles(r.watchedScriptFiles(), nil)
	}
	start := time.Now()
	gen, err := r.build(ctx)
	if err != nil {
		r.scriptSum = pre.digest() // do not retry the same broken files every poll
		r.failed, r.failedAt = true, start
		r.w.setBroad(true)
		serving := r.lastGen
		r.setStatus(func(s *Status) { s.Err = err })
		if serving == 0 {
			return err // New reports it
		}
		r.log.Error("policy script load failed; the previous generation keeps serving",
			"path", r.path, "generation", serving, "err", err)
		if r.opts.OnLoad != nil {
			r.opts.OnLoad(serving, err)
		}
		return err
	}

	files := []string{r.path}
	for _, in := range gen.Info.Inputs {
		if filepath.IsAbs(in) && !slices.Contains(files, in) {
			files = append(files, in)
		}
	}
	r.scriptFiles = files
	r.scriptSum = sumFiles(files, pre).digest()
	r.failed = false
	r.w.setBroad(false)
	r.w.setFiles(r.watchedFiles())

	r.lastGen = gen.N
	ref := &genRef{gen: gen, r: r}
	ref.refs.Store(1)
	r.live.Add(1)
	if old := r.cur.Swap(ref); old != nil {
		old.release()
	}
	r.setStatus(func(s *Status) { s.Generation, s.Err = gen.N, nil })
	r.log.Info("policy script loaded", "path", r.path, "generation", gen.N,
		"inputs", len(files), "took", time.Since(start).Round(time.Microsecond))
	if r.opts.OnLoad != nil {
		r.opts.OnLoad(gen.N, nil)
	}
	return nil
}

// build compiles the script into a generation without publishing it.
func (r *Reloader) build(ctx context.Context) (*Generation, error) {
	if _, err := os.Stat(r.path); err != nil {
		return nil, fmt.Errorf("read policy script: %w", err)
	}
	prog, err := engine.Load(ctx, r.path, r.opts.Load)
	if err != nil {
		return nil, err // already file:line:col: message
	}
	info := prog.Info()
	var policy any
	if r.opts.Compile != nil {
		if policy, err = r.opts.Compile(info); err != nil {
			return nil, err
		}
	}
	pool, err := engine.NewPool(prog, r.opts.Pool)
	if err != nil {
		return nil, fmt.Errorf("start isolate pool for %s: %w", r.path, err)
	}
	return &Generation{N: r.lastGen + 1, Info: info, Pool: pool, Policy: policy}, nil
}

// watchedScriptFiles is the file set to hash before a load: the serving
// generation's, or just the script before the first load.
func (r *Reloader) watchedScriptFiles() []string {
	if r.scriptFiles == nil {
		return []string{r.path}
	}
	return r.scriptFiles
}

func (r *Reloader) watchedFiles() []string {
	files := slices.Clone(r.scriptFiles)
	if r.envPath != "" {
		files = append(files, r.envPath)
	}
	return files
}

// updateEnv rereads the env file and publishes a new Env when the
// effective vars changed. Without force it returns early when the file's
// bytes are unchanged. r.loadMu must be held.
func (r *Reloader) updateEnv(force bool) error {
	if r.envPath == "" {
		return nil
	}
	data, readErr := os.ReadFile(r.envPath)
	sum := sha256.Sum256(data)
	if readErr != nil {
		sum = [sha256.Size]byte{} // missing: differs from any content's hash
	}
	if !force && sum == r.envSum {
		return nil
	}
	r.envSum = sum

	fileVars := map[string]string{}
	switch {
	case errors.Is(readErr, os.ErrNotExist):
		r.log.Warn("env file not found; env has only --var values until it appears", "path", r.envPath)
	case readErr != nil:
		// Unreadable is not the same as absent: keep the last good env.
		err := fmt.Errorf("read env file: %w", readErr)
		r.setStatus(func(s *Status) { s.EnvErr = err })
		r.log.Error("env file unreadable; the previous env keeps serving", "path", r.envPath, "err", readErr)
		return err
	default:
		parsed, err := dotenv.ParseBytes(data)
		if err != nil {
			err = fmt.Errorf("env file %s: %w", r.envPath, err) // line number only
			r.setStatus(func(s *Status) { s.EnvErr = err })
			r.log.Error("env file invalid; the previous env keeps serving", "err", err)
			return err
		}
		fileVars = parsed
	}
	r.setStatus(func(s *Status) { s.EnvErr = nil })

	vars := fileVars
	maps.Copy(vars, r.opts.Vars)
	old := r.env.Load()
	added, removed, changed := diffKeys(old.Vars, vars)
	if len(added)+len(removed)+len(changed) == 0 {
		r.log.Debug("env file changed; the effective env did not", "path", r.envPath)
		return nil
	}
	r.env.Store(&jsapi.Env{Vars: vars, KV: r.kv})
	// Key names only: values are secrets.
	r.log.Info("env updated", "path", r.envPath, "added", added, "removed", removed, "changed", changed)
	return nil
}

// diffKeys names the keys added, removed and changed from old to new.
func diffKeys(old, new map[string]string) (added, removed, changed []string) {
	for k, v := range new {
		if ov, ok := old[k]; !ok {
			added = append(added, k)
		} else if ov != v {
			changed = append(changed, k)
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			removed = append(removed, k)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

func (r *Reloader) setStatus(f func(*Status)) {
	r.statusMu.Lock()
	f(&r.status)
	r.statusMu.Unlock()
}
