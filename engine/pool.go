package engine

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/outbound-dev/outbound/jsapi"
)

// DefaultTimeout is the wall-clock limit of one invocation.
const DefaultTimeout = 30 * time.Second

// DefaultMaxWaiting is how many of one instance's invocations may wait for
// a runtime when PoolOptions leaves MaxWaiting zero.
const DefaultMaxWaiting = 256

// ErrTimeout means the invocation hit the pool's wall-clock limit, waiting
// for a runtime included. The caller answers 504. An invocation whose
// context ends first returns that context's error (context.Canceled when
// the caller hung up) instead.
var ErrTimeout = errors.New("handler timed out")

// ErrClosed is returned by Invoke after Close.
var ErrClosed = errors.New("engine: pool is closed")

// ErrBusy means too many of the instance's invocations are already waiting
// for a runtime (PoolOptions.MaxWaiting). The caller answers 503 at once.
var ErrBusy = errors.New("engine: too many of this instance's requests are waiting for a runtime")

// ErrRecycled means the runtime the invocation was suspended on had to be
// retired because another invocation on it ran away, overflowed its stack
// or crashed, and the invocation had already started I/O, so it could not
// be run again from the start. The caller answers 503.
var ErrRecycled = errors.New("engine: the runtime running this handler was retired because of another invocation on it")

// HandlerError is a handler that failed: it threw, returned something that is
// not a Response, its promise rejected, it overflowed the stack, a body read
// passed the cap, or the handler does not exist. The caller answers 500 and
// logs Msg, which may hold secrets: it must never reach the sandbox.
type HandlerError struct {
	Msg string
}

func (e *HandlerError) Error() string { return "handler failed: " + e.Msg }

// PoolOptions configures a Pool.
type PoolOptions struct {
	Size         int               // runtimes; default DefaultSize()
	Timeout      time.Duration     // per invocation, waiting included; default DefaultTimeout
	Fetch        http.RoundTripper // carries fetch(); required
	MaxBodyBytes int64             // cap on body reads from JS; default 32 MiB
	MaxWaiting   int               // per instance; default DefaultMaxWaiting
	Logger       *slog.Logger      // console.* and pool events; default slog.Default()
}

// DefaultSize is the number of runtimes a pool has unless told otherwise:
// one per CPU Go may use, and at least two, so that one runaway handler
// (until its timeout stops it) does not hold up every other.
func DefaultSize() int { return max(2, runtime.GOMAXPROCS(0)) }

// Pool runs a Program's handlers on a fixed number of runtimes, each
// serving many invocations at once through its own job queue: an
// invocation suspended on a fetch, a body read, a KV call or a timer holds
// no runtime.
//
// Fairness: a new invocation runs at once, on the caller's goroutine, when
// a runtime is idle and nobody is waiting. Otherwise it waits in its
// instance's queue, and the queues take turns: each time a runtime frees up
// it starts the next invocation of the next instance in the round. Jobs
// queued on one runtime (I/O completions, timers) take turns by instance
// the same way, and a runtime alternates between its queued jobs and
// waiting starts. An instance with many CPU-heavy requests so delays
// another instance's request by at most one of its jobs per runtime, not by
// its whole backlog. An instance may have at most MaxWaiting invocations
// waiting (more get ErrBusy), and time spent waiting counts against the
// invocation's timeout.
type Pool struct {
	prog *Program
	opts PoolOptions
	jcfg jsapi.Config

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	live    []*isolate
	idle    []*isolate             // runtimes nobody owns, most recently idle last
	waiting fairQueue[*invocation] // invocations waiting for a runtime

	inflight sync.WaitGroup // Invoke calls
	workers  sync.WaitGroup // runners, spawners and drains
}

// NewPool starts opts.Size runtimes for p.
func NewPool(p *Program, opts PoolOptions) (*Pool, error) {
	if opts.Fetch == nil {
		return nil, errors.New("engine: PoolOptions.Fetch is required")
	}
	if opts.Size <= 0 {
		opts.Size = DefaultSize()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = jsapi.DefaultMaxBodyBytes
	}
	if opts.MaxWaiting <= 0 {
		opts.MaxWaiting = DefaultMaxWaiting
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	pl := &Pool{
		prog:    p,
		opts:    opts,
		jcfg:    jsapi.Config{Fetch: opts.Fetch, MaxBodyBytes: opts.MaxBodyBytes, Logger: opts.Logger},
		closing: make(chan struct{}),
	}
	for i := 0; i < opts.Size; i++ {
		if err := pl.addIsolate(); err != nil {
			pl.Close()
			return nil, err
		}
	}
	return pl, nil
}

func (pl *Pool) log() *slog.Logger { return pl.opts.Logger }

// maxGrace bounds how long JS of an invocation whose deadline has passed
// may go on running before the runtime is interrupted and retired.
const maxGrace = time.Second

// grace is how long a job that was running when its invocation's deadline
// passed may go on: a quarter of the timeout, at most maxGrace.
func (pl *Pool) grace() time.Duration { return min(pl.opts.Timeout/4, maxGrace) }

// addIsolate starts a runtime and puts it to work.
func (pl *Pool) addIsolate() error {
	iso, _, err := newIsolate(pl.prog, pl.jcfg, DefaultEvalTimeout, pl)
	if err != nil {
		return err
	}
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return ErrClosed
	}
	pl.live = append(pl.live, iso)
	pl.workers.Add(1)
	go iso.runner()
	pl.mu.Unlock()
	iso.release()
	return nil
}

// replace starts a runtime in place of a retired one, retrying while the
// pool is open.
func (pl *Pool) replace() {
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return
	}
	pl.workers.Add(1)
	pl.mu.Unlock()
	go func() {
		defer pl.workers.Done()
		backoff := 10 * time.Millisecond
		for {
			err := pl.addIsolate()
			if err == nil || errors.Is(err, ErrClosed) {
				return
			}
			pl.log().Error("engine: cannot start a replacement runtime", "err", err)
			select {
			case <-pl.closing:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}()
}

// pushIdle and unidle keep the idle list. pl.mu held.
func (pl *Pool) pushIdle(iso *isolate) {
	iso.idleAt = len(pl.idle)
	pl.idle = append(pl.idle, iso)
}

func (pl *Pool) unidle(iso *isolate) {
	i := iso.idleAt
	if i < 0 {
		return
	}
	last := len(pl.idle) - 1
	if i != last {
		pl.idle[i] = pl.idle[last]
		pl.idle[i].idleAt = i
	}
	pl.idle[last] = nil
	pl.idle = pl.idle[:last]
	iso.idleAt = -1
}

// takeIdle returns an idle runtime, now owned by the caller, or nil.
// pl.mu held.
func (pl *Pool) takeIdle() *isolate {
	n := len(pl.idle)
	if n == 0 {
		return nil
	}
	iso := pl.idle[n-1]
	pl.unidle(iso)
	iso.owned = true
	return iso
}

// nextWaiting pops the next waiting invocation, or nil. pl.mu held.
func (pl *Pool) nextWaiting() *invocation {
	inv, _ := pl.waiting.pop()
	return inv
}

// retry queues inv, whose isolate was retired before it did any I/O, to
// run again from the start, ahead of its instance's other waiting
// invocations. Its timeout keeps running.
func (pl *Pool) retry(inv *invocation) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if inv.state != stBegun || inv.answered {
		inv.state = stEnded // its caller has its answer (timed out, cancelled)
		return
	}
	inv.state = stQueued
	inv.iso, inv.promise = nil, nil
	inv.retries++
	pl.waiting.pushFront(inv.key, inv)
	if iso := pl.takeIdle(); iso != nil {
		iso.signal()
	}
}

// Invoke runs one handler. It returns the handler's response, ErrTimeout,
// ErrBusy, ErrRecycled, ErrClosed, the context's error, or a *HandlerError.
// A response from `return fetch(request)` is the RoundTripper's own
// *http.Response, body untouched; the caller closes it.
func (pl *Pool) Invoke(ctx context.Context, c Call) (*http.Response, error) {
	if c.Request == nil || c.Request.URL == nil {
		return nil, errors.New("engine: Invoke needs a request with a URL")
	}
	if err := ctx.Err(); err != nil {
		return nil, err // the caller is gone: nothing would read the answer
	}
	inv := &invocation{pl: pl, c: &c, ctx: ctx, key: c.InstanceID, done: make(chan struct{})}
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return nil, ErrClosed
	}
	pl.inflight.Add(1)
	defer pl.inflight.Done()
	inv.timer = time.AfterFunc(pl.opts.Timeout, inv.expire)
	var iso *isolate
	if pl.waiting.len() == 0 {
		iso = pl.takeIdle()
	}
	switch {
	case iso != nil:
		iso.beginLocked(inv)
	case pl.waiting.laneLen(inv.key) >= pl.opts.MaxWaiting:
		pl.mu.Unlock()
		inv.timer.Stop()
		return nil, ErrBusy
	default:
		inv.state = stQueued
		pl.waiting.push(inv.key, inv)
		// No runtime is idle while others wait; should one be, it must
		// not stay idle.
		if idle := pl.takeIdle(); idle != nil {
			idle.signal()
		}
	}
	pl.mu.Unlock()
	if iso != nil {
		iso.inlineStart = inv
		iso.runStart(inv)
		w, cancel := iso.callerWork, iso.callerCancel
		iso.inlineStart, iso.callerWork, iso.callerCancel = nil, nil, nil
		iso.release()
		if w != nil {
			pl.mu.Lock()
			answered := inv.answered
			inv.ioCancel = cancel // from now on the timeout ends it
			pl.mu.Unlock()
			if answered {
				// Crashed or timed out already: answer now, the fetch is
				// for nothing and winds down.
				cancel()
				go w()
			} else {
				w()
			}
		}
	}
	return inv.wait()
}

// Stats is a snapshot of a pool, for tests and metrics.
type Stats struct {
	Runtimes  int // live runtimes
	Idle      int // runtimes nobody runs on
	Waiting   int // invocations waiting for a runtime
	Suspended int // invocations begun on a runtime and not finished
}

// Stats returns a snapshot of the pool.
func (pl *Pool) Stats() Stats {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	st := Stats{Runtimes: len(pl.live), Idle: len(pl.idle), Waiting: pl.waiting.len()}
	for _, iso := range pl.live {
		if !iso.dead {
			st.Suspended += len(iso.invs)
		}
	}
	return st
}

// Close stops accepting invocations, waits for those in flight, and stops
// every runtime and its goroutines.
func (pl *Pool) Close() {
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return
	}
	pl.closed = true
	close(pl.closing)
	pl.mu.Unlock()
	pl.inflight.Wait()
	pl.mu.Lock()
	for _, iso := range pl.live {
		// Whoever owns the runtime when the job comes up ends what is left
		// on it (stray jobs of answered invocations) and stops it.
		iso.postLocked("", func() { iso.kill(nil, ErrClosed) })
	}
	pl.live = nil
	pl.mu.Unlock()
	pl.workers.Wait()
}
