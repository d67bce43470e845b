package jsapi

// Invocations sharing one runtime: the loop that runs a Realm's jobs, the
// per-invocation Scope, what each scope still waits for, and which scope's
// code is running (goja's async context tracker carries it across awaits).

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/dop251/goja"
)

// Loop runs a Realm's jobs one at a time, each with the runtime to itself,
// on whichever goroutine its owner picks. Many invocations share a runtime:
// while one waits for I/O or a timer, jobs of others run.
type Loop interface {
	// Post queues fn to run for scope s. It is safe from any goroutine and
	// may run fn before it returns when the runtime is idle. It reports false
	// if the runtime has been retired: fn will never run.
	Post(s *Scope, fn func()) bool
	// Go runs work, the network I/O of a fetch of scope s (which ends by
	// posting its result), on a goroutine other than the loop's: a new
	// one, or one that would otherwise only wait for s. The work ends soon
	// after s does: End cancels its context. cancel does the same from any
	// goroutine, for an owner that must end the work without the loop.
	// Called on the loop.
	Go(s *Scope, work func(), cancel context.CancelFunc)
}

// Scope is one invocation's state: its context (which fetch and KV use),
// where console goes, the timers and fetches it started so that End can
// stop them, and how many callbacks it still waits for.
type Scope struct {
	ctx      context.Context
	logger   *slog.Logger
	instance string
	class    string
	owner    any

	timers  map[int64]*timer
	fetches []*fetchCall
	pending int  // callbacks registered and not yet run or cancelled
	touched bool // started I/O: a fetch, a KV call, a body read
	ended   bool
	stopped atomic.Bool
}

// Stop marks the scope as finished from any goroutine: none of its jobs
// runs from now on. End still has to run on the loop to clear its timers
// and abort its fetches.
func (s *Scope) Stop() { s.stopped.Store(true) }

// Stopped reports whether Stop has been called.
func (s *Scope) Stopped() bool { return s.stopped.Load() }

// Owner is what Begin was given.
func (s *Scope) Owner() any { return s.owner }

// Instance is the instance the invocation serves.
func (s *Scope) Instance() string { return s.instance }

// Touched reports whether the invocation has started any I/O (a fetch, a KV
// call, a read of a body stream). One that has not can be run again from
// the start without anything outside the runtime seeing it twice.
func (s *Scope) Touched() bool { return s.touched }

// Ended reports whether End has been called.
func (s *Scope) Ended() bool { return s.ended }

// Begin makes the scope of a new invocation; it may be called from any
// goroutine. logger may be nil (the realm's logger is used); instance and
// class are added to every console record; owner is the caller's handle,
// returned by Owner. Code runs in the scope between Enter and Leave, and in
// promise reactions it registered.
func (r *Realm) Begin(ctx context.Context, logger *slog.Logger, instance, class string, owner any) *Scope {
	if logger == nil {
		logger = r.cfg.Logger
	}
	return &Scope{ctx: ctx, logger: logger, instance: instance, class: class, owner: owner}
}

// Enter starts a job of s: JS called from now on runs in s.
func (r *Realm) Enter(s *Scope) {
	r.job, r.scope = s, s
	r.switched(s)
}

// Leave ends the current job. The fetches it made start now, once it is
// known whether the handler handed one back (TakeReturnedFetch).
func (r *Realm) Leave() {
	r.job, r.scope = nil, nil
	r.switched(nil)
	if len(r.prepared) > 0 {
		r.dispatch()
	}
}

func (r *Realm) switched(s *Scope) {
	if r.cfg.Switch != nil {
		r.cfg.Switch(s)
	}
}

// post queues fn to run as a job of s. If s has ended by then, drop runs
// instead (it may be nil). Safe from any goroutine.
func (r *Realm) post(s *Scope, fn, drop func()) bool {
	return r.loop.Post(s, func() {
		if s.ended || s.stopped.Load() {
			if drop != nil {
				drop()
			}
			return
		}
		r.Enter(s)
		fn()
		r.Leave()
	})
}

// Grab, Resumed and Exited make the Realm goja's AsyncContextTracker: a
// promise reaction runs in the scope that registered it (an await resumes
// in its own invocation) whatever job settled the promise.
func (r *Realm) Grab() any {
	if r.scope == nil {
		return nil
	}
	return r.scope
}

func (r *Realm) Resumed(o any) {
	s, _ := o.(*Scope)
	if s == nil || s == r.scope {
		return
	}
	r.scope = s
	r.switched(s)
}

func (r *Realm) Exited() {
	if r.scope != r.job {
		r.scope = r.job
		r.switched(r.job)
	}
}

// Current is the scope whose code is running, or nil between jobs.
func (r *Realm) Current() *Scope { return r.scope }

// End finishes an invocation: its timers are cleared, and fetches whose
// response body is not keep's are aborted and their bodies closed. keep is
// the response handed to the caller (it may be nil). Jobs and reactions of
// s that are still queued do not run. End needs no working runtime: it is
// also how the owner cleans up after retiring one.
func (r *Realm) End(s *Scope, keep *http.Response) {
	if s == nil || s.ended {
		return
	}
	s.ended = true
	for _, t := range s.timers {
		t.stop()
	}
	s.timers = nil
	var keepBody io.ReadCloser
	if keep != nil {
		keepBody = keep.Body
	}
	for _, f := range s.fetches {
		f.finish(keepBody)
	}
	s.fetches = nil
}

// curScope returns the running invocation's scope or a detached one for code
// that runs outside an invocation (module evaluation).
func (r *Realm) curScope() *Scope {
	if r.scope == nil {
		r.scope = &Scope{ctx: context.Background(), logger: r.cfg.Logger}
		r.job = r.scope
	}
	return r.scope
}

// endedError is what an API that would start work rejects with when the
// invocation that asked has already answered.
func (r *Realm) endedError() *goja.Object {
	return r.typeError("the handler invocation has already finished; work cannot start after it answered")
}
