// Package store owns what outbound keeps on disk: the instance registry (id,
// class, token hash, creation time — never a token), each instance's runtime
// overrides, and the data of KV namespace bindings. Store is the small
// interface the rest of handlers uses, so that a shared backend for fleets of
// proxies can replace the embedded default, Bolt (go.etcd.io/bbolt).
//
// Every write that returns nil is durable: Bolt fsyncs each commit.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/jsapi"
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
	Overrides chain.Overrides
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

// Store is the persistence the handlers need.
type Store interface {
	// Instances returns every instance with its overrides, in id order.
	Instances(ctx context.Context) ([]Instance, error)
	// CreateInstance stores a new instance; ErrExists if the id is taken.
	CreateInstance(ctx context.Context, in Instance) error
	// DeleteInstance removes an instance and its overrides; ErrNotFound if
	// there is none.
	DeleteInstance(ctx context.Context, id string) error
	// PutOverrides replaces an instance's overrides; ErrNotFound if there
	// is no such instance.
	PutOverrides(ctx context.Context, id string, o chain.Overrides) error
	// KV returns the namespace of a binding. It does not touch the disk.
	KV(binding string) jsapi.KV
	// Subscribe calls fn after each committed write, on the writer's
	// goroutine; fn must not block or call back into the store. A shared
	// backend also reports the writes of other processes. The returned
	// function unsubscribes.
	Subscribe(fn func(Change)) (unsubscribe func())
	Close() error
}
