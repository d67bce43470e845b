// Package instances owns sandbox instances: who they are (id, class, token
// hash), their runtime overrides and the ten runtime methods that change
// them, with upstream's validation and error text, and the instance view the
// control API shows. State is copy-on-write: each instance's overrides sit
// behind an atomic.Pointer, so a request decides on one snapshot and a
// method call is atomic with respect to in-flight decisions. Changes are
// persisted through a store.Store before they are published.
//
// It does not decide requests (package chain) and serves no HTTP.
package instances

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/internal/store"
)

// Options configures a Registry.
type Options struct {
	// Store persists instances and overrides; nil keeps them in memory only.
	Store store.Store
	// Policy returns the current script's compiled policy. Required.
	Policy func() *chain.ScriptPolicy
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Registry is the set of instances.
type Registry struct {
	opts Options

	// writeMu serialises Create and Delete, which persist before they
	// publish; mu guards byID and is held only for map access, so
	// authentication never waits on a disk write.
	writeMu sync.Mutex
	mu      sync.RWMutex
	byID    map[string]*Instance

	dummyHash [32]byte // compared against when the id is unknown
}

// Instance is one sandbox instance. Its identity is immutable; its
// overrides change only through the Registry.
type Instance struct {
	id, class string
	tokenHash [32]byte
	created   time.Time
	sources   []netip.Prefix // client ranges of the transparent listener

	mu    sync.Mutex // serialises method calls on this instance
	state atomic.Pointer[state]
	gone  atomic.Bool
}

// state is one immutable snapshot of an instance's overrides.
type state struct {
	ov chain.Overrides
	rt *chain.Runtime
}

// ID returns the instance id.
func (inst *Instance) ID() string { return inst.id }

// Class returns the class the instance was created with.
func (inst *Instance) Class() string { return inst.class }

// Created returns when the instance was created.
func (inst *Instance) Created() time.Time { return inst.created }

// Sources returns the client address ranges attributed to the instance.
func (inst *Instance) Sources() []netip.Prefix { return slices.Clone(inst.sources) }

// Alive reports whether the instance has not been deleted.
func (inst *Instance) Alive() bool { return !inst.gone.Load() }

// Runtime returns the compiled overrides for one decision: one snapshot,
// never torn by a concurrent method call.
func (inst *Instance) Runtime() *chain.Runtime { return inst.state.Load().rt }

// Overrides returns a copy of the overrides as set.
func (inst *Instance) Overrides() chain.Overrides { return inst.state.Load().ov.Clone() }

// Open creates a registry and restores the instances in opts.Store.
func Open(ctx context.Context, opts Options) (*Registry, error) {
	if opts.Policy == nil {
		return nil, errors.New("instances: Options.Policy is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Registry{opts: opts, byID: map[string]*Instance{}}
	if _, err := rand.Read(r.dummyHash[:]); err != nil {
		return nil, err
	}
	if opts.Store == nil {
		return r, nil
	}
	recs, err := opts.Store.Instances(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore instances: %w", err)
	}
	for _, rec := range recs {
		var ov chain.Overrides
		if len(rec.Overrides) > 0 {
			if err := json.Unmarshal(rec.Overrides, &ov); err != nil {
				return nil, fmt.Errorf("restore instance %s: overrides: %w", rec.ID, err)
			}
		}
		rt, err := chain.CompileOverrides(ov)
		if err != nil {
			return nil, fmt.Errorf("restore instance %s: %w", rec.ID, err)
		}
		inst := &Instance{id: rec.ID, class: rec.Class, tokenHash: rec.TokenHash, created: rec.Created, sources: rec.Sources}
		inst.state.Store(&state{ov: ov, rt: rt})
		r.byID[rec.ID] = inst
	}
	return r, nil
}

var emptyRuntime, _ = chain.CompileOverrides(chain.Overrides{})

// validID accepts ids usable as a proxy username and a URL path segment.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// Create makes an instance and returns it with its token, the only time
// the token exists outside the sandbox. An empty id gets "sbx-<random>"; an
// empty class gets the script's only class. Sources are the client ranges
// the transparent listener attributes to it; a range that overlaps another
// instance's is refused, so every client address names one instance.
func (r *Registry) Create(ctx context.Context, id, class string, sources ...netip.Prefix) (*Instance, string, error) {
	sources = slices.Clone(sources)
	for i, p := range sources {
		if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:10.0.0.0/104 is 10.0.0.0/8
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if !p.IsValid() || p.Addr().Is4In6() {
			return nil, "", fmt.Errorf("%w: invalid source range %s", ErrBadArgs, p)
		}
		sources[i] = p.Masked()
	}
	pol := r.opts.Policy()
	if pol == nil {
		return nil, "", fmt.Errorf("%w: no policy script is loaded", ErrUnknownClass)
	}
	if class == "" {
		c, ok := pol.DefaultClass()
		if !ok {
			return nil, "", fmt.Errorf("%w: the script defines several classes; name one", ErrUnknownClass)
		}
		class = c
	}
	if pol.Class(class) == nil {
		return nil, "", fmt.Errorf("%w: %q", ErrUnknownClass, class)
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	if id == "" {
		for id == "" || r.exists(id) {
			id = "sbx-" + randomHex(8)
		}
	} else if !validID(id) {
		return nil, "", fmt.Errorf("%w: %q (use 1..128 of A-Z a-z 0-9 - _ .)", ErrBadID, id)
	} else if r.exists(id) {
		return nil, "", fmt.Errorf("%w: %s", ErrExists, id)
	}
	if err := r.sourcesFree(sources); err != nil {
		return nil, "", err
	}
	token := randomHex(32) // 256 bits
	inst := &Instance{id: id, class: class, tokenHash: sha256.Sum256([]byte(token)), created: r.opts.Now().UTC(), sources: sources}
	inst.state.Store(&state{rt: emptyRuntime})
	if r.opts.Store != nil {
		err := r.opts.Store.CreateInstance(ctx, store.Instance{ID: id, Class: class, TokenHash: inst.tokenHash, Created: inst.created, Sources: sources})
		if errors.Is(err, store.ErrExists) {
			return nil, "", fmt.Errorf("%w: %s", ErrExists, id)
		}
		if err != nil {
			return nil, "", err
		}
	}
	r.mu.Lock()
	r.byID[id] = inst
	r.mu.Unlock()
	return inst, token, nil
}

// sourcesFree refuses ranges that overlap each other or another instance's.
func (r *Registry) sourcesFree(sources []netip.Prefix) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for i, p := range sources {
		for _, q := range sources[:i] {
			if p.Overlaps(q) {
				return fmt.Errorf("%w: %s overlaps %s", ErrBadArgs, p, q)
			}
		}
		for _, other := range r.byID {
			for _, q := range other.sources {
				if p.Overlaps(q) {
					return fmt.Errorf("%w: %s overlaps %s of instance %s", ErrSourceTaken, p, q, other.id)
				}
			}
		}
	}
	return nil
}

// BySource returns the live instance whose sources hold the client address.
func (r *Registry) BySource(addr netip.Addr) (*Instance, bool) {
	addr = addr.Unmap()
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, inst := range r.byID {
		for _, p := range inst.sources {
			if p.Contains(addr) && inst.Alive() {
				return inst, true
			}
		}
	}
	return nil, false
}

func (r *Registry) exists(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.byID[id]
	return ok
}

// Delete removes an instance; its token stops working at once.
func (r *Registry) Delete(ctx context.Context, id string) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	inst, ok := r.Get(id)
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	inst.mu.Lock() // let an in-flight method call finish first
	defer inst.mu.Unlock()
	if r.opts.Store != nil {
		if err := r.opts.Store.DeleteInstance(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	inst.gone.Store(true)
	r.mu.Lock()
	delete(r.byID, id)
	r.mu.Unlock()
	return nil
}

// Get returns an instance by id.
func (r *Registry) Get(id string) (*Instance, bool) {
	r.mu.RLock()
	inst, ok := r.byID[id]
	r.mu.RUnlock()
	return inst, ok
}

// List returns every instance, in id order.
func (r *Registry) List() []*Instance {
	r.mu.RLock()
	out := make([]*Instance, 0, len(r.byID))
	for _, inst := range r.byID {
		out = append(out, inst)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Instance) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return out
}

// Len returns the number of instances.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byID)
}

// Authenticate checks a token in constant time. An unknown id is compared
// against a random hash, so it takes the same path as a wrong token.
func (r *Registry) Authenticate(id, token string) (*Instance, bool) {
	sum := sha256.Sum256([]byte(token))
	inst, found := r.Get(id)
	want := &r.dummyHash
	if found {
		want = &inst.tokenHash
	}
	match := subtle.ConstantTimeCompare(sum[:], want[:]) == 1
	if !found || !match || inst.gone.Load() {
		return nil, false
	}
	return inst, true
}

// update runs one method call: copy the overrides, apply fn, compile,
// persist, publish. On any error nothing changes.
func (r *Registry) update(ctx context.Context, id string, fn func(cls *chain.ClassPolicy, class string, o *chain.Overrides) error) (View, error) {
	inst, ok := r.Get(id)
	if !ok {
		return View{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.gone.Load() {
		return View{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	pol := r.opts.Policy()
	next := inst.state.Load().ov.Clone()
	if err := fn(pol.Class(inst.class), inst.class, &next); err != nil {
		return View{}, err
	}
	rt, err := chain.CompileOverrides(next)
	if err != nil {
		return View{}, fmt.Errorf("%w: %w", ErrBadArgs, err)
	}
	if r.opts.Store != nil {
		b, err := json.Marshal(next)
		if err != nil {
			return View{}, err
		}
		if err := r.opts.Store.PutOverrides(ctx, id, b); err != nil {
			return View{}, err
		}
	}
	inst.state.Store(&state{ov: next, rt: rt})
	return viewOf(inst, pol), nil
}

// View returns the instance view against the current script.
func (r *Registry) View(inst *Instance) View { return viewOf(inst, r.opts.Policy()) }
