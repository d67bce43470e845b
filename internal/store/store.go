// Package store is the contract of what outbound keeps: the instance
// registry (id, class, token hash, creation time, home replica and CA
// certificate — never a token or a private key), each instance's runtime
// overrides, and the data of KV namespace bindings. It holds the interfaces
// and records only, so that every layer can name them without pulling in a
// database; the backends live in sub-packages (bolt, the embedded default;
// redis, shared by a fleet of replicas) and share one conformance suite
// (storetest).
//
// A backend treats overrides as opaque JSON: what they mean is the
// decision layer's business. Every write that returns nil is durable.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

var (
	ErrExists   = errors.New("instance already exists")
	ErrNotFound = errors.New("instance not found")
	// ErrUnavailable wraps every failure to reach a backend that lives
	// elsewhere (a network error, a timeout, a server going down). Its text
	// is "store unavailable: " and the cause, which names no secret.
	ErrUnavailable = errors.New("store unavailable")
)

// Instance is one persisted instance.
type Instance struct {
	ID        string
	Class     string
	TokenHash [32]byte // SHA-256 of the token; the token itself is never stored
	Created   time.Time
	// Home is the advertised proxy address (HOST:PORT) of the replica that
	// serves the instance and holds its CA key.
	Home string
	// CACert is the PEM of the instance's current CA certificate, so any
	// replica can hand it out. The key never leaves the home's memory.
	CACert []byte
	// Overrides is the JSON of the instance's runtime overrides, or nil
	// when none are set.
	Overrides json.RawMessage
	// Sources are the client address ranges the transparent listener
	// attributes to the instance (serve --transparent); nil for none.
	Sources []netip.Prefix
	// Rev counts the writes to the record: 1 when created, one more for
	// each change of overrides, home or certificate. Set by the store.
	Rev uint64
}

// ChangeKind says what a Change is about.
type ChangeKind uint8

const (
	InstanceCreated ChangeKind = iota + 1
	InstanceDeleted
	OverridesChanged
	KVChanged
	// HomeChanged: the instance's home or CA certificate changed.
	HomeChanged
	// Resync: the backend may have missed other processes' writes (its
	// change feed reconnected); anything may have changed, so a subscriber
	// that keeps a copy rereads everything. Only shared backends send it.
	Resync
)

// Change is a notification of one committed write.
type Change struct {
	Kind    ChangeKind
	ID      string // instance id, for instance changes
	Binding string // KV binding, for KVChanged
	Key     string // KV key, for KVChanged
	// Remote is true for a write made by another process. Such changes are
	// reported on the backend's own goroutine, after the commit.
	Remote bool
}

// Store is the persistence of instances, overrides and KV.
type Store interface {
	// Instances returns every instance with its overrides, in id order.
	Instances(ctx context.Context) ([]Instance, error)
	// Instance returns one instance; ErrNotFound if there is none.
	Instance(ctx context.Context, id string) (Instance, error)
	// CreateInstance stores a new instance; ErrExists if the id is taken.
	CreateInstance(ctx context.Context, inst Instance) error
	// DeleteInstance removes an instance and its overrides; ErrNotFound if
	// there is none.
	DeleteInstance(ctx context.Context, id string) error
	// UpdateOverrides is a read-modify-write of an instance's overrides that
	// no concurrent write, by this process or another, can interleave: fn
	// gets the current overrides (nil when none) and returns the new ones.
	// fn may run more than once and must not call the store; an error from
	// fn aborts with nothing written. It returns the record as written.
	UpdateOverrides(ctx context.Context, id string, fn func(cur json.RawMessage) (json.RawMessage, error)) (Instance, error)
	// SetHome records that home now serves the instance, with a new CA
	// certificate; ErrNotFound if there is no such instance.
	SetHome(ctx context.Context, id, home string, caCert []byte) (Instance, error)
	// KV returns the namespace of a binding. It does no I/O.
	KV(binding string) KV
	// Subscribe calls fn after each committed write, on the writer's
	// goroutine; fn must not block or call back into the store. A shared
	// backend also reports the writes of other processes. The returned
	// function unsubscribes.
	Subscribe(fn func(Change)) (unsubscribe func())
	Close() error
}

// KV is one KV namespace binding, as handlers see it through env.NAME and
// the control API through /v1/kv.
type KV interface {
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	// Put stores value; a zero expires means it never expires.
	Put(ctx context.Context, key string, value []byte, expires time.Time) error
	Delete(ctx context.Context, key string) error
	// List returns up to PageSize(limit) keys with prefix, after cursor, in
	// key order. next is "" when the listing is complete; otherwise it is
	// the cursor of the next page.
	List(ctx context.Context, prefix, cursor string, limit int) (keys []string, next string, err error)
}

// Shared is implemented by a backend that several processes use at once,
// each a replica of a fleet.
type Shared interface {
	Store
	// ClaimHome takes this process's exclusive claim on serving as home,
	// and keeps it while the process lives. A claim left by a process that
	// died without releasing it lapses after a few seconds: ClaimHome waits
	// for that until ctx is done. The claim is released by Close.
	ClaimHome(ctx context.Context, home string) error
	// Health reports whether the backend is reachable and its change feed
	// is in sync.
	Health() Health
}

// Health is the state of a shared backend.
type Health struct {
	Backend string // "redis"
	Addr    string // where it is, without credentials
	// Up is true while the backend answers and its change feed is
	// connected: the copy kept from it is current.
	Up bool
	// Err is why it is down, or "".
	Err string
	// Since is when Up last changed.
	Since time.Time
	// Resyncs counts full rereads after a reconnect of the change feed.
	Resyncs uint64
	// ClaimLost is set when another process holds this process's home
	// claim (two replicas advertising one address).
	ClaimLost bool
}

// MaxKeyBytes is Workers KV's key limit.
const MaxKeyBytes = 512

// Subscribers is the set of Subscribe callbacks of a backend. The zero
// value is ready.
type Subscribers struct {
	mu   sync.Mutex
	fns  map[int]func(Change)
	next int
}

// Subscribe adds fn; the returned function removes it.
func (s *Subscribers) Subscribe(fn func(Change)) (unsubscribe func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[int]func(Change){}
	}
	id := s.next
	s.next++
	s.fns[id] = fn
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.fns, id)
	}
}

// Notify calls every subscriber with c, on the caller's goroutine.
func (s *Subscribers) Notify(c Change) {
	s.mu.Lock()
	fns := make([]func(Change), 0, len(s.fns))
	for _, fn := range s.fns {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(c)
	}
}

// MaxPage is Workers KV's default and largest list page.
const MaxPage = 1000

// PageSize is the number of keys a KV list returns for limit: MaxPage
// when limit is not in 1..MaxPage.
func PageSize(limit int) int {
	if limit <= 0 || limit > MaxPage {
		return MaxPage
	}
	return limit
}

// CheckKey rejects a KV key that is empty or longer than MaxKeyBytes.
func CheckKey(key string) error {
	if key == "" || len(key) > MaxKeyBytes {
		return fmt.Errorf("KV key must be 1..%d bytes, got %d", MaxKeyBytes, len(key))
	}
	return nil
}
