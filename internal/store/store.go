// Package store is the contract of what outbound keeps: the instance
// registry (id, class, token hash, creation time — never a token), each
// instance's runtime overrides, and the data of KV namespace bindings. It
// holds the interfaces and records only, so that every layer can name them
// without pulling in a database; the backends live in sub-packages (bolt,
// the embedded default) and share one conformance suite (storetest).
//
// A backend treats overrides as opaque JSON: what they mean is the
// decision layer's business. Every write that returns nil is durable.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"time"
)

var (
	ErrExists   = errors.New("instance already exists")
	ErrNotFound = errors.New("instance not found")
)

// Instance is one persisted instance.
type Instance struct {
	ID        string
	Class     string
	TokenHash [32]byte // SHA-256 of the token; the token itself is never stored
	Created   time.Time
	// Overrides is the JSON of the instance's runtime overrides, or nil
	// when none are set.
	Overrides json.RawMessage
	// Sources are the client address ranges the transparent listener
	// attributes to the instance (serve --transparent); nil for none.
	Sources []netip.Prefix
}

// ChangeKind says what a Change is about.
type ChangeKind uint8

const (
	InstanceCreated ChangeKind = iota + 1
	InstanceDeleted
	OverridesChanged
	KVChanged
)

// Change is a notification of one committed write.
type Change struct {
	Kind    ChangeKind
	ID      string // instance id, for instance changes
	Binding string // KV binding, for KVChanged
	Key     string // KV key, for KVChanged
}

// Store is the persistence of instances, overrides and KV.
type Store interface {
	// Instances returns every instance with its overrides, in id order.
	Instances(ctx context.Context) ([]Instance, error)
	// CreateInstance stores a new instance; ErrExists if the id is taken.
	CreateInstance(ctx context.Context, in Instance) error
	// DeleteInstance removes an instance and its overrides; ErrNotFound if
	// there is none.
	DeleteInstance(ctx context.Context, id string) error
	// PutOverrides replaces an instance's overrides (JSON); ErrNotFound if
	// there is no such instance.
	PutOverrides(ctx context.Context, id string, overrides json.RawMessage) error
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
	// List returns up to limit keys with prefix, after cursor, in key order.
	// next is "" when the listing is complete.
	List(ctx context.Context, prefix, cursor string, limit int) (keys []string, next string, err error)
}

// MaxKeyBytes is Workers KV's key limit.
const MaxKeyBytes = 512
