package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/outbound-dev/outbound/jsapi"
)

// DefaultTimeout is the wall-clock limit of one invocation.
const DefaultTimeout = 30 * time.Second

// ErrTimeout means the invocation hit the pool's wall-clock limit. The caller
// answers 504. An invocation whose context ends first returns that
// context's error (context.Canceled when the caller hung up) instead.
var ErrTimeout = errors.New("handler timed out")

// ErrClosed is returned by Invoke after Close.
var ErrClosed = errors.New("engine: pool is closed")

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
	Size         int               // runtimes; default GOMAXPROCS
	Timeout      time.Duration     // per invocation; default DefaultTimeout
	Fetch        http.RoundTripper // carries fetch(); required
	MaxBodyBytes int64             // cap on body reads from JS; default 32 MiB
	Logger       *slog.Logger      // console.* and pool events; default slog.Default()
}

// Pool runs a Program's handlers on a fixed number of runtimes. A runtime
// serves one invocation at a time; one that timed out or overflowed its
// stack is replaced, never reused.
type Pool struct {
	prog *Program
	opts PoolOptions
	jcfg jsapi.Config
	idle chan *isolate

	mu       sync.Mutex
	closed   bool
	closing  chan struct{}
	inflight sync.WaitGroup // Invoke calls
	workers  sync.WaitGroup // isolate goroutines, spawners and drains
	live     []*isolate
}

// NewPool starts opts.Size runtimes for p.
func NewPool(p *Program, opts PoolOptions) (*Pool, error) {
	if opts.Fetch == nil {
		return nil, errors.New("engine: PoolOptions.Fetch is required")
	}
	if opts.Size <= 0 {
		opts.Size = runtime.GOMAXPROCS(0)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = jsapi.DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	pl := &Pool{
		prog:    p,
		opts:    opts,
		jcfg:    jsapi.Config{Fetch: opts.Fetch, MaxBodyBytes: opts.MaxBodyBytes, Logger: opts.Logger},
		idle:    make(chan *isolate, opts.Size),
		closing: make(chan struct{}),
	}
	for i := 0; i < opts.Size; i++ {
		iso, err := pl.newIsolate()
		if err != nil {
			pl.Close()
			return nil, err
		}
		pl.idle <- iso
	}
	return pl, nil
}

func (pl *Pool) newIsolate() (*isolate, error) {
	iso, _, err := newIsolate(pl.prog, pl.jcfg, DefaultEvalTimeout)
	if err != nil {
		return nil, err
	}
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		iso.retire()
		iso.start(func() {})
		return nil, ErrClosed
	}
	pl.live = append(pl.live, iso)
	pl.workers.Add(1)
	pl.mu.Unlock()
	iso.timer = time.NewTimer(time.Hour)
	iso.timer.Stop()
	iso.start(func() {
		pl.mu.Lock()
		for i, x := range pl.live {
			if x == iso {
				pl.live = append(pl.live[:i], pl.live[i+1:]...)
				break
			}
		}
		pl.mu.Unlock()
		pl.workers.Done()
	})
	return iso, nil
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
			iso, err := pl.newIsolate()
			if err == nil {
				pl.idle <- iso
				return
			}
			if errors.Is(err, ErrClosed) {
				return
			}
			pl.opts.Logger.Error("engine: cannot start a replacement runtime", "err", err)
			select {
			case <-pl.closing:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}()
}

// Invoke runs one handler. It returns the handler's response, ErrTimeout, or
// a *HandlerError. A response from `return fetch(request)` is the
// RoundTripper's own *http.Response, body untouched; the caller closes it.
func (pl *Pool) Invoke(ctx context.Context, c Call) (*http.Response, error) {
	if c.Request == nil || c.Request.URL == nil {
		return nil, errors.New("engine: Invoke needs a request with a URL")
	}
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return nil, ErrClosed
	}
	pl.inflight.Add(1)
	pl.mu.Unlock()
	defer pl.inflight.Done()

	var iso *isolate
	for iso == nil {
		select {
		case iso = <-pl.idle:
			if iso.dead.Load() { // retired while idle (a stray timer overflowed)
				iso = nil
				pl.replace()
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a runtime: %w", ctx.Err())
		case <-pl.closing:
			return nil, ErrClosed
		}
	}
	return pl.invoke(ctx, iso, &c)
}

func (pl *Pool) invoke(ctx context.Context, iso *isolate, c *Call) (*http.Response, error) {
	iso.seq++
	iso.call, iso.ctx = c, ctx
	seq := iso.seq
	if !iso.loop.RunOnLoop(iso.runFn) {
		pl.replace()
		return nil, &HandlerError{Msg: "runtime is stopped"}
	}
	iso.timer.Reset(pl.opts.Timeout)
	for {
		select {
		case res := <-iso.done:
			if res.seq != seq {
				continue // a late result of an earlier call; cannot happen, but harmless
			}
			iso.timer.Stop()
			pl.release(iso, res.fatal)
			return res.resp, res.err
		case <-iso.timer.C:
			iso.kill()
			pl.replace()
			return nil, ErrTimeout
		case <-ctx.Done():
			// The caller is gone. Let the handler wind down within its
			// timeout (its fetches see the cancelled context) so the runtime
			// can be reused, and answer now.
			pl.workers.Add(1)
			go pl.drain(iso, seq)
			return nil, ctx.Err()
		}
	}
}

func (pl *Pool) drain(iso *isolate, seq uint64) {
	defer pl.workers.Done()
	for {
		select {
		case res := <-iso.done:
			if res.seq != seq {
				continue
			}
			iso.timer.Stop()
			if res.resp != nil {
				_ = res.resp.Body.Close()
			}
			pl.release(iso, res.fatal)
			return
		case <-iso.timer.C:
			iso.kill()
			pl.replace()
			return
		case <-pl.closing:
			iso.kill()
			return
		}
	}
}

func (pl *Pool) release(iso *isolate, fatal bool) {
	if fatal || iso.dead.Load() {
		iso.retire()
		pl.replace()
		return
	}
	pl.idle <- iso
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
	live := append([]*isolate(nil), pl.live...)
	pl.mu.Unlock()
	for _, iso := range live {
		iso.retire()
	}
	pl.workers.Wait()
}
