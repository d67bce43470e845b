// Package memkv is a KV namespace held in memory: the store.KV that handler
// tests (outbound test) give a script for a binding written as a plain
// object. It keeps the contract of the persistent backends (key limits,
// expiry, listing in key order with a cursor) so a handler behaves the same
// against it; nothing is ever written to disk.
package memkv

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/outbound-dev/outbound/internal/store"
)

// KV is an in-memory store.KV. The zero value is not usable; call New.
type KV struct {
	name string
	now  func() time.Time

	mu   sync.Mutex
	data map[string]entry
}

type entry struct {
	value   []byte
	expires time.Time // zero: never
}

func (e entry) live(now time.Time) bool { return e.expires.IsZero() || now.Before(e.expires) }

// New returns an empty namespace named binding (the name appears in
// errors). now is the clock; nil means time.Now.
func New(binding string, now func() time.Time) *KV {
	if now == nil {
		now = time.Now
	}
	return &KV{name: binding, now: now, data: map[string]entry{}}
}

var _ store.KV = (*KV)(nil)

func (k *KV) checkKey(op, key string) error {
	if err := store.CheckKey(key); err != nil {
		return fmt.Errorf("%s %s: %w", k.name, op, err)
	}
	return nil
}

// Get implements store.KV. A key past its expiry is gone.
func (k *KV) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.data[key]
	if !ok || !e.live(k.now()) {
		return nil, false, nil
	}
	return bytes.Clone(e.value), true, nil
}

// Put implements store.KV; the value is copied.
func (k *KV) Put(ctx context.Context, key string, value []byte, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := k.checkKey("put", key); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.data[key] = entry{value: append([]byte{}, value...), expires: expires}
	return nil
}

// Delete implements store.KV; deleting a missing key is not an error.
func (k *KV) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.data, key)
	return nil
}

// List implements store.KV. The cursor is the last key of the previous
// page, as the bolt backend's is.
func (k *KV) List(ctx context.Context, prefix, cursor string, limit int) ([]string, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	limit = store.PageSize(limit)
	keys := []string{} // not nil: an empty listing is still a list
	k.mu.Lock()
	now := k.now()
	for key, e := range k.data {
		if strings.HasPrefix(key, prefix) && key > cursor && e.live(now) {
			keys = append(keys, key)
		}
	}
	k.mu.Unlock()
	sort.Strings(keys)
	if len(keys) > limit {
		return keys[:limit], keys[limit-1], nil
	}
	return keys, "", nil
}

// Snapshot returns a copy of every live key and value.
func (k *KV) Snapshot() map[string][]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	out := make(map[string][]byte, len(k.data))
	for key, e := range k.data {
		if e.live(now) {
			out[key] = append([]byte{}, e.value...)
		}
	}
	return out
}
