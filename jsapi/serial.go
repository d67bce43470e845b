package jsapi

import (
	"context"
	"sync"
)

// SerialLoop is the simplest Loop: one goroutine runs every job, of every
// scope, in the order posted, and each I/O runs on a goroutine of its own.
// It suits a runtime that does one thing at a time, such as a test runner;
// the engine schedules its shared runtimes itself.
type SerialLoop struct {
	mu      sync.Mutex
	jobs    []func()
	wake    chan struct{}
	started bool
	stopped bool
	done    chan struct{}
}

// NewSerialLoop returns a loop that queues jobs until Start.
func NewSerialLoop() *SerialLoop {
	return &SerialLoop{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Post queues fn (Loop).
func (l *SerialLoop) Post(_ *Scope, fn func()) bool { return l.Run(fn) }

// Go runs work on a goroutine of its own (Loop).
func (l *SerialLoop) Go(_ *Scope, work func(), _ context.CancelFunc) { go work() }

// Run queues fn to run on the loop, and reports false once the loop has
// been stopped: fn will never run.
func (l *SerialLoop) Run(fn func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.jobs = append(l.jobs, fn)
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

// Start runs the queued jobs, and those posted later, on a goroutine of
// the loop's own until Stop. Until Start the caller owns the runtime.
func (l *SerialLoop) Start() {
	l.mu.Lock()
	if l.started {
		l.mu.Unlock()
		return
	}
	l.started = true
	l.mu.Unlock()
	go func() {
		defer close(l.done)
		for range l.wake {
			for {
				l.mu.Lock()
				if l.stopped || len(l.jobs) == 0 {
					l.mu.Unlock()
					break
				}
				j := l.jobs[0]
				l.jobs[0] = nil
				l.jobs = l.jobs[1:]
				l.mu.Unlock()
				j()
			}
		}
	}()
}

// Stop drops the jobs not yet run and ends the loop's goroutine after the
// job it is running, if any. It does not wait: Done says when it is over.
func (l *SerialLoop) Stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.stopped = true
	l.jobs = nil
	close(l.wake)
	if !l.started {
		l.started = true
		close(l.done)
	}
}

// Done is closed once the loop's goroutine has ended after Stop.
func (l *SerialLoop) Done() <-chan struct{} { return l.done }
