package proxy

// Shutdown: drain for as long as the caller allows, then close whatever is
// still open, so a stream or tunnel that never ends cannot keep the process.

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// ForceWait bounds how long Shutdown waits, after it has closed every
// connection, for the goroutines that served them to return.
const ForceWait = 5 * time.Second

// Shutdown stops accepting and drains: requests, streams, tunnels and
// relayed WebSockets in flight may finish until ctx is done, and captured
// connections arriving meanwhile are refused. Whatever is still open then
// is cut: every request's context is cancelled and every connection,
// tunnel and stream is closed. Shutdown returns once the
// goroutines serving them have returned (waiting at most ForceWait after the
// cut). Its error says what had to be cut; nil means everything drained.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	s.startMu.Lock()
	s.shutStart = true
	s.startMu.Unlock()

	err := s.outer.Shutdown(ctx) // stops accepting, closes idle connections
	if err == nil {
		err = s.inner.Shutdown(ctx)
	}
	if err == nil {
		err = s.active.wait(ctx) // tunnels and relays: hijacked, so not counted above
	}
	var cut int
	if err != nil {
		cut = s.active.count()
	}
	s.closeAll()
	waitCtx, cancel := context.WithTimeout(context.Background(), ForceWait)
	defer cancel()
	stuck := s.active.wait(waitCtx)
	innerDone := make(chan struct{})
	go func() {
		s.innerWG.Wait()
		close(innerDone)
	}()
	select {
	case <-innerDone:
	case <-waitCtx.Done():
		stuck = waitCtx.Err()
	}
	switch {
	case stuck != nil:
		return fmt.Errorf("proxy: shutdown: %d requests or tunnels still running %s after they were closed", s.active.count(), ForceWait)
	case err != nil:
		return fmt.Errorf("proxy: shutdown: closed %d requests, streams or tunnels still open when the grace period ended: %w", cut, err)
	}
	return nil
}

// closeAll cancels every request and tunnel and closes every connection.
func (s *Server) closeAll() {
	s.cancel()
	s.outer.Close()
	s.inner.Close()
	s.innerLn.Close() // in case Serve was never called
	s.mu.Lock()
	for t := range s.relays {
		t.cut()
	}
	s.mu.Unlock()
}

// activity counts running handler goroutines. Unlike a sync.WaitGroup it
// may be waited on while handlers still start (a connection accepted just
// before Shutdown), and the wait is bounded by a context.
type activity struct {
	mu      sync.Mutex
	n       int
	waiters []chan struct{}
}

func (a *activity) add() {
	a.mu.Lock()
	a.n++
	a.mu.Unlock()
}

func (a *activity) done() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n--
	if a.n == 0 {
		for _, w := range a.waiters {
			close(w)
		}
		a.waiters = nil
	}
}

func (a *activity) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// wait returns nil once nothing runs, or ctx's error.
func (a *activity) wait(ctx context.Context) error {
	a.mu.Lock()
	if a.n == 0 {
		a.mu.Unlock()
		return nil
	}
	w := make(chan struct{})
	a.waiters = append(a.waiters, w)
	a.mu.Unlock()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
