// Package instances owns sandbox instances: who they are (id, class, token
// hash, home replica), their runtime overrides and the ten runtime methods
// that change them, with upstream's validation and error text, and the
// instance view the control API shows. State is copy-on-write: each
// instance's overrides sit behind an atomic.Pointer, so a request decides
// on one snapshot and a method call is atomic with respect to in-flight
// decisions. Changes are persisted through a store.Store before they are
// published; with a store shared by a fleet, other replicas' changes are
// applied as the store reports them (sync.go).
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
	"log/slog"
	"net/netip"
	"slices"
	"strings"
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
	// Home is this replica's advertised proxy address (HOST:PORT), recorded
	// as the home of the instances it creates or serves.
	Home string
	// Shared says the store is shared by a fleet: instances whose home is
	// another replica are listed and managed here, but never served, and
	// other replicas' writes are applied as the store reports them. When
	// false, this process serves every instance in the store.
	Shared bool
	// NewCA makes the CA of an instance this replica is to serve, keeping
	// the key in memory, and returns the certificate (PEM). Nil: no CA.
	NewCA func(id string) (certPEM []byte, err error)
	// Gone is told when an instance this replica served is no longer
	// served here (deleted, by any replica, or a create that failed), so
	// its CA key, trace and connections go with it.
	Gone func(id string)
	// OnRemote, if set, is called after a change written by another
	// process has been applied to instance id.
	OnRemote func(id string)
	// OnChange, if set, is told the id of an instance whose overrides or
	// home may have changed, by a method call here or by another process's
	// write applied here, once the change is published, on the goroutine
	// that applied it. It is where every policy change meets, so that open
	// tunnels can be decided again: a new path that publishes state calls
	// changed too.
	OnChange func(id string)
	// Logger receives what the sync of remote changes has to say.
	Logger *slog.Logger
}

// Registry is the set of instances.
type Registry struct {
	opts Options
	log  *slog.Logger

	// writeMu serialises Create, Delete and the application of other
	// processes' writes, which persist or fetch before they publish; mu
	// guards byID and is held only for map access, so authentication
	// never waits on the store.
	writeMu sync.Mutex
	mu      sync.RWMutex
	byID    map[string]*Instance

	dummyHash [32]byte // compared against when the id is unknown

	sync syncer
}

// Instance is one sandbox instance. Its identity is immutable; its
// overrides and home change only through the Registry.
type Instance struct {
	id, class string
	tokenHash [32]byte
	created   time.Time
	sources   []netip.Prefix // client ranges of the transparent listener
	// served is set when this process holds the instance's CA: it
	// created the instance, or took it over at start as its home.
	served bool

	mu    sync.Mutex // serialises method calls on this instance
	state atomic.Pointer[state]
	gone  atomic.Bool
}

// state is one immutable snapshot of an instance's mutable parts.
type state struct {
	ov     chain.Overrides
	rt     *chain.Runtime
	rev    uint64 // the store's revision this snapshot reflects
	home   string
	caCert []byte
	local  bool // served here: this process holds the CA and is the home
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

// Home returns the advertised proxy address of the replica serving the
// instance.
func (inst *Instance) Home() string { return inst.state.Load().home }

// Local reports whether this replica serves the instance.
func (inst *Instance) Local() bool { return inst.state.Load().local }

// CACert returns the PEM of the instance's current CA certificate, or nil.
func (inst *Instance) CACert() []byte { return inst.state.Load().caCert }

// Runtime returns the compiled overrides for one decision: one snapshot,
// never torn by a concurrent method call.
func (inst *Instance) Runtime() *chain.Runtime { return inst.state.Load().rt }

// Overrides returns a copy of the overrides as set.
func (inst *Instance) Overrides() chain.Overrides { return inst.state.Load().ov.Clone() }

// Open creates a registry and restores the instances in opts.Store. It
// becomes the home of the stored instances whose home is opts.Home (every
// instance, when the store is not shared), giving each a new CA. Call
// Start to apply other processes' writes, and Close when done.
func Open(ctx context.Context, opts Options) (*Registry, error) {
	if opts.Policy == nil {
		return nil, errors.New("instances: Options.Policy is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{opts: opts, log: opts.Logger, byID: map[string]*Instance{}}
	if _, err := rand.Read(r.dummyHash[:]); err != nil {
		return nil, err
	}
	r.sync.init()
	if opts.Store == nil {
		return r, nil
	}
	// Subscribe before reading, so that no write lands in between unseen.
	r.sync.unsubscribe = opts.Store.Subscribe(r.sync.note)
	recs, err := opts.Store.Instances(ctx)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("restore instances: %w", err)
	}
	for _, rec := range recs {
		serve := !opts.Shared || rec.Home == opts.Home
		inst, err := r.fromRecord(rec, serve)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("restore instance %s: %w", rec.ID, err)
		}
		if serve {
			if err := r.adopt(ctx, inst); err != nil {
				r.Close()
				return nil, err
			}
		}
		r.byID[rec.ID] = inst
	}
	return r, nil
}

// fromRecord builds an instance from its stored record.
func (r *Registry) fromRecord(rec store.Instance, served bool) (*Instance, error) {
	st, err := r.stateOf(rec, served)
	if err != nil {
		return nil, err
	}
	inst := &Instance{id: rec.ID, class: rec.Class, tokenHash: rec.TokenHash, created: rec.Created, sources: rec.Sources, served: served}
	inst.state.Store(st)
	return inst, nil
}

// stateOf compiles a record's mutable parts.
func (r *Registry) stateOf(rec store.Instance, served bool) (*state, error) {
	var ov chain.Overrides
	if len(rec.Overrides) > 0 {
		if err := json.Unmarshal(rec.Overrides, &ov); err != nil {
			return nil, fmt.Errorf("overrides: %w", err)
		}
	}
	rt, err := chain.CompileOverrides(ov)
	if err != nil {
		return nil, err
	}
	home := rec.Home
	if !r.opts.Shared {
		home = r.opts.Home
	}
	return &state{ov: ov, rt: rt, rev: rec.Rev, home: home, caCert: rec.CACert,
		local: served && (!r.opts.Shared || rec.Home == r.opts.Home)}, nil
}

// adopt makes this replica the home of a restored instance: a new CA, and
// in a fleet its certificate and home recorded for the other replicas.
func (r *Registry) adopt(ctx context.Context, inst *Instance) error {
	var cert []byte
	if r.opts.NewCA != nil {
		var err error
		if cert, err = r.opts.NewCA(inst.id); err != nil {
			return fmt.Errorf("CA for instance %q: %w", inst.id, err)
		}
	}
	st := *inst.state.Load()
	// Only a fleet needs the new certificate and home in the store; the
	// embedded store would pay a write per instance at every start.
	if r.opts.Shared {
		rec, err := r.opts.Store.SetHome(ctx, inst.id, r.opts.Home, cert)
		if err != nil {
			return fmt.Errorf("restore instance %s: %w", inst.id, err)
		}
		// All of it from the record as written: another replica's write
		// since Instances() is behind this revision, so the change feed
		// would skip it and stale overrides would be served.
		fresh, err := r.stateOf(rec, true)
		if err != nil {
			return fmt.Errorf("restore instance %s: %w", inst.id, err)
		}
		st = *fresh
	}
	st.home, st.caCert, st.local = r.opts.Home, cert, true
	inst.state.Store(&st)
	return nil
}

// Close stops applying other processes' writes. It does not close the
// store.
func (r *Registry) Close() { r.sync.stop() }

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

// Create makes an instance, served by this replica, and returns it with
// its token, the only time the token exists outside the sandbox. An empty
// id gets "sbx-<random>"; an empty class gets the script's only class.
// Sources are the client ranges this replica's transparent listener
// attributes to it; a range that overlaps another of this replica's
// instances is refused, so every client address names one instance.
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
	if id != "" && !validID(id) {
		return nil, "", fmt.Errorf("%w: %q (use 1..128 of A-Z a-z 0-9 - _ .)", ErrBadID, id)
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	for tries := 0; ; tries++ {
		pick := id
		if pick == "" {
			for pick == "" || r.exists(pick) {
				pick = "sbx-" + randomHex(8)
			}
		}
		inst, token, err := r.create(ctx, pick, class, sources)
		if errors.Is(err, ErrExists) && id == "" && tries < 5 {
			continue // a random id taken elsewhere in the fleet: pick another
		}
		return inst, token, err
	}
}

// create makes one instance with a fixed id; writeMu is held.
func (r *Registry) create(ctx context.Context, id, class string, sources []netip.Prefix) (*Instance, string, error) {
	if r.exists(id) {
		return nil, "", fmt.Errorf("%w: %s", ErrExists, id)
	}
	if err := r.sourcesFree(sources); err != nil {
		return nil, "", err
	}
	var cert []byte
	if r.opts.NewCA != nil {
		var err error
		if cert, err = r.opts.NewCA(id); err != nil {
			return nil, "", fmt.Errorf("CA for instance %q: %w", id, err)
		}
	}
	token := randomHex(32) // 256 bits
	inst := &Instance{id: id, class: class, tokenHash: sha256.Sum256([]byte(token)), created: r.opts.Now().UTC(), sources: sources, served: true}
	inst.state.Store(&state{rt: emptyRuntime, rev: 1, home: r.opts.Home, caCert: cert, local: true})
	if r.opts.Store != nil {
		err := r.opts.Store.CreateInstance(ctx, store.Instance{ID: id, Class: class, TokenHash: inst.tokenHash, Created: inst.created, Home: r.opts.Home, CACert: cert, Sources: sources})
		if err != nil {
			if r.opts.Gone != nil {
				r.opts.Gone(id) // the CA made above
			}
			if errors.Is(err, store.ErrExists) {
				return nil, "", fmt.Errorf("%w: %s", ErrExists, id)
			}
			return nil, "", err
		}
	}
	r.mu.Lock()
	r.byID[id] = inst
	r.mu.Unlock()
	return inst, token, nil
}

// sourcesFree refuses ranges that overlap each other or those of another
// instance this replica serves. Ranges are the transparent listener's, so
// instances of other replicas, on other hosts, may reuse them.
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
			if !other.Local() {
				continue
			}
			for _, q := range other.sources {
				if p.Overlaps(q) {
					return fmt.Errorf("%w: %s overlaps %s of instance %s", ErrSourceTaken, p, q, other.id)
				}
			}
		}
	}
	return nil
}

// BySource returns the live instance this replica serves whose sources
// hold the client address.
func (r *Registry) BySource(addr netip.Addr) (*Instance, bool) {
	addr = addr.Unmap()
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, inst := range r.byID {
		for _, p := range inst.sources {
			if p.Contains(addr) && inst.Alive() && inst.Local() {
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

// Delete removes an instance, wherever it is served; its token stops
// working at once here, and on its home as soon as the change reaches it.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if _, err := r.Lookup(ctx, id); err != nil {
		return err
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	inst, ok := r.Get(id)
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if r.opts.Store != nil {
		inst.mu.Lock() // let an in-flight method call finish first
		err := r.opts.Store.DeleteInstance(ctx, id)
		inst.mu.Unlock()
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	r.drop(inst)
	return nil
}

// drop forgets an instance; writeMu is held.
func (r *Registry) drop(inst *Instance) {
	inst.mu.Lock()
	inst.gone.Store(true)
	inst.mu.Unlock()
	r.mu.Lock()
	if r.byID[inst.id] == inst {
		delete(r.byID, inst.id)
	}
	r.mu.Unlock()
	if inst.served && r.opts.Gone != nil {
		r.opts.Gone(inst.id)
	}
}

// Get returns an instance by id.
func (r *Registry) Get(id string) (*Instance, bool) {
	r.mu.RLock()
	inst, ok := r.byID[id]
	r.mu.RUnlock()
	return inst, ok
}

// Lookup returns an instance by id. With a shared store, an id this
// replica has not heard of yet is read from the store, so that a call
// made on any replica right after a create on another finds it.
func (r *Registry) Lookup(ctx context.Context, id string) (*Instance, error) {
	if inst, ok := r.Get(id); ok {
		return inst, nil
	}
	if r.opts.Store != nil && r.opts.Shared && validID(id) {
		if err := r.refresh(ctx, id); err != nil {
			return nil, err
		}
		if inst, ok := r.Get(id); ok {
			return inst, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// List returns every instance, in id order.
func (r *Registry) List() []*Instance {
	r.mu.RLock()
	out := make([]*Instance, 0, len(r.byID))
	for _, inst := range r.byID {
		out = append(out, inst)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Instance) int { return strings.Compare(a.id, b.id) })
	return out
}

// Len returns the number of instances.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byID)
}

// LocalLen returns the number of instances this replica serves.
func (r *Registry) LocalLen() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, inst := range r.byID {
		if inst.Local() {
			n++
		}
	}
	return n
}

// match checks a token in constant time. An unknown id is compared
// against a random hash, so it takes the same path as a wrong token.
func (r *Registry) match(id, token string) (*Instance, bool) {
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

// Authenticate checks a token in constant time and returns the instance
// if this replica serves it. The instances of other replicas never
// authenticate here: this replica has no CA for them.
func (r *Registry) Authenticate(id, token string) (*Instance, bool) {
	inst, _, ok := r.AuthenticateHome(id, token)
	return inst, ok
}

// AuthenticateHome is Authenticate that, for credentials that are right
// but belong to an instance another replica serves, returns that replica's
// address as home.
func (r *Registry) AuthenticateHome(id, token string) (inst *Instance, home string, ok bool) {
	inst, ok = r.match(id, token)
	switch {
	case !ok:
		return nil, "", false
	case !inst.Local():
		return nil, inst.Home(), false
	}
	return inst, "", true
}

// update runs one method call: apply fn to the current overrides,
// compile, persist, publish. With a store, fn sees the overrides as
// stored, inside a read-modify-write that no other replica's call can
// interleave, and may run more than once. On any error nothing changes.
func (r *Registry) update(ctx context.Context, id string, fn func(cls *chain.ClassPolicy, class string, o *chain.Overrides) error) (View, error) {
	v, err := r.apply(ctx, id, fn)
	if err == nil {
		r.changed(id) // inst.mu released: the callback may decide with it
	}
	return v, err
}

// changed tells Options.OnChange that instance id changed.
func (r *Registry) changed(id string) {
	if r.opts.OnChange != nil {
		r.opts.OnChange(id)
	}
}

// apply is update's work, under the instance's lock.
func (r *Registry) apply(ctx context.Context, id string, fn func(cls *chain.ClassPolicy, class string, o *chain.Overrides) error) (View, error) {
	inst, err := r.Lookup(ctx, id)
	if err != nil {
		return View{}, err
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.gone.Load() {
		return View{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	pol := r.opts.Policy()
	cur := inst.state.Load()
	var next chain.Overrides
	var rt *chain.Runtime
	apply := func(o chain.Overrides) error {
		if err := fn(pol.Class(inst.class), inst.class, &o); err != nil {
			return err
		}
		c, err := chain.CompileOverrides(o)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadArgs, err)
		}
		next, rt = o, c
		return nil
	}
	st := *cur
	if r.opts.Store == nil {
		if err := apply(cur.ov.Clone()); err != nil {
			return View{}, err
		}
	} else {
		rec, err := r.opts.Store.UpdateOverrides(ctx, id, func(stored json.RawMessage) (json.RawMessage, error) {
			var o chain.Overrides
			if len(stored) > 0 {
				if err := json.Unmarshal(stored, &o); err != nil {
					return nil, fmt.Errorf("stored overrides of %s: %w", id, err)
				}
			}
			if err := apply(o); err != nil {
				return nil, err
			}
			return json.Marshal(next)
		})
		if errors.Is(err, store.ErrNotFound) {
			return View{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if err != nil {
			return View{}, err
		}
		st.rev = rec.Rev
	}
	st.ov, st.rt = next, rt
	inst.state.Store(&st)
	return viewOf(inst, pol), nil
}

// View returns the instance view against the current script.
func (r *Registry) View(inst *Instance) View { return viewOf(inst, r.opts.Policy()) }
