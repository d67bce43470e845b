package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbound-dev/outbound/internal/store"
)

// Backoff between attempts to get the change feed back.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// feed follows the change feed until ctx is done, reconnecting with
// backoff. The first subscription's outcome goes to first, once.
func (s *Store) feed(ctx context.Context, first chan<- error) {
	wait := backoffMin
	for {
		subscribed := false
		err := s.follow(ctx, func() {
			subscribed = true
			s.resync(first == nil)
			if first != nil {
				first <- nil
				first = nil
			}
		})
		if ctx.Err() != nil {
			return
		}
		if first != nil { // never subscribed: Open reports it
			first <- fmt.Errorf("%w: Redis at %s: subscribing to %s: %v", store.ErrUnavailable, s.addr, s.keys.channel(), err)
			return
		}
		if subscribed {
			wait = backoffMin
		}
		s.health.down(err)
		s.log.Warn("store: change feed lost; reconnecting", "error", err.Error(), "retry_in", wait.String())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait = min(wait*2, backoffMax)
	}
}

// follow subscribes once and delivers messages until the connection
// fails. The connection is pinged every pingEvery, busy or idle, and given
// up when a ping goes unanswered for three of those; a pong also brings
// the health back after a failed command.
func (s *Store) follow(ctx context.Context, onSubscribed func()) error {
	ps := s.c.Subscribe(ctx, s.keys.channel())
	defer ps.Close()
	s.feedMu.Lock()
	s.feedPS = ps
	s.feedMu.Unlock()
	if ctx.Err() != nil { // Close ran before feedPS was set
		return ctx.Err()
	}
	var pingSent time.Time // zero when no ping is unanswered
	lastPing := time.Now()
	for {
		if pingSent.IsZero() && time.Since(lastPing) >= pingEvery {
			if err := ps.Ping(ctx); err != nil {
				return err
			}
			pingSent, lastPing = time.Now(), time.Now()
		}
		if !pingSent.IsZero() && time.Since(pingSent) > 3*pingEvery {
			return fmt.Errorf("no answer to a ping for %s", time.Since(pingSent).Round(time.Millisecond))
		}
		msg, err := ps.ReceiveTimeout(ctx, pingEvery)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isTimeout(err) {
				continue
			}
			return err
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				onSubscribed()
			}
		case *goredis.Pong:
			pingSent = time.Time{}
			s.health.up()
		case *goredis.Message:
			s.deliver(m.Payload)
		}
	}
}

// resync runs when the feed (re)subscribes: whatever was published while
// it was away is lost, so cached KV values go and subscribers reread.
// The first subscription, in Open, has nothing to catch up on.
func (s *Store) resync(again bool) {
	s.cache.clear()
	s.health.resynced(again)
	if again {
		s.Notify(store.Change{Kind: store.Resync, Remote: true})
	}
}

// deliver passes on a change made by another process.
func (s *Store) deliver(payload string) {
	c, origin, err := decodeMessage(payload)
	if err != nil {
		s.log.Warn("store: unreadable change message ignored", "error", err.Error())
		return
	}
	if origin == s.origin {
		return // already reported by the write itself
	}
	if c.Kind == store.KVChanged {
		s.cache.invalidate(c.Binding, c.Key)
	}
	s.Notify(c)
}

// decodeMessage reads a change message, as a remote change.
func decodeMessage(payload string) (store.Change, string, error) {
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		return store.Change{}, "", err
	}
	switch m.Kind {
	case store.InstanceCreated, store.InstanceDeleted, store.OverridesChanged, store.HomeChanged:
		if len(m.ID) == 0 {
			return store.Change{}, "", fmt.Errorf("change of kind %d names no instance", m.Kind)
		}
		return store.Change{Kind: m.Kind, ID: string(m.ID), Remote: true}, m.Origin, nil
	case store.KVChanged:
		return store.Change{Kind: m.Kind, Binding: string(m.Binding), Key: string(m.Key), Remote: true}, m.Origin, nil
	}
	return store.Change{}, "", fmt.Errorf("unknown change kind %d", m.Kind)
}
