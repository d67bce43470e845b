package instances

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/internal/store/redis"
	"github.com/outbound-dev/outbound/internal/store/redis/redistest"
	"github.com/outbound-dev/outbound/internal/store/storetest"
)

// Registries of a fleet, each on its own handle of one real Redis.

func openRedis(t *testing.T, url string) *redis.Store {
	t.Helper()
	s, err := redis.Open(context.Background(), redis.Options{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// replica is a registry as one replica runs it, recording its CA hooks.
type replica struct {
	*Registry
	mu    sync.Mutex
	cas   map[string]int // id -> CAs made
	gone  []string
	certs atomic.Int64
}

func newReplica(t *testing.T, st store.Store, home string) *replica {
	t.Helper()
	var pol policies
	pol.set(t, sandboxClass, openClass)
	rep := &replica{cas: map[string]int{}}
	r, err := Open(context.Background(), Options{
		Store: st, Policy: pol.get, Home: home, Shared: true,
		NewCA: func(id string) ([]byte, error) {
			rep.mu.Lock()
			defer rep.mu.Unlock()
			rep.cas[id]++
			return []byte(fmt.Sprintf("cert %s #%d of %s", id, rep.certs.Add(1), home)), nil
		},
		Gone: func(id string) {
			rep.mu.Lock()
			defer rep.mu.Unlock()
			rep.gone = append(rep.gone, id)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Close)
	rep.Registry = r
	return rep
}

func (rep *replica) casOf(id string) int {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return rep.cas[id]
}

func (rep *replica) goneList() []string {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return slices.Clone(rep.gone)
}

func TestFleetRegistries(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, redistest.Options{})
	a := newReplica(t, openRedis(t, rs.URL()), "10.0.0.1:3128")
	b := newReplica(t, openRedis(t, rs.URL()), "10.0.0.2:3128")

	inst, tok, err := a.Create(ctx, "sbx-1", "MySandbox")
	if err != nil {
		t.Fatal(err)
	}
	if !inst.Local() || inst.Home() != "10.0.0.1:3128" || string(inst.CACert()) != "cert sbx-1 #1 of 10.0.0.1:3128" {
		t.Fatalf("created: local %v home %s cert %q", inst.Local(), inst.Home(), inst.CACert())
	}
	storetest.WaitFor(t, "B to learn of sbx-1", func() bool { _, ok := b.Get("sbx-1"); return ok })
	onB, _ := b.Get("sbx-1")
	if onB.Local() || onB.Home() != "10.0.0.1:3128" || string(onB.CACert()) != string(inst.CACert()) {
		t.Fatalf("on B: local %v home %s cert %q", onB.Local(), onB.Home(), onB.CACert())
	}
	if _, ok := b.Authenticate("sbx-1", tok); ok {
		t.Fatal("B authenticated an instance it does not serve")
	}
	if inst, home, ok := b.AuthenticateHome("sbx-1", tok); ok || inst != nil || home != "10.0.0.1:3128" {
		t.Fatalf("AuthenticateHome on B = %v %q %v", inst, home, ok)
	}
	if _, home, _ := b.AuthenticateHome("sbx-1", tok+"x"); home != "" {
		t.Fatal("a wrong token learned the home")
	}
	if inst, home, ok := a.AuthenticateHome("sbx-1", tok); !ok || inst == nil || home != "" {
		t.Fatalf("AuthenticateHome on the home = %v %q %v", inst, home, ok)
	}
	if b.casOf("sbx-1") != 0 {
		t.Fatal("B made a CA for an instance it does not serve")
	}

	// A method on B reaches A; appends from both at once all land.
	if _, err := b.Call(ctx, "sbx-1", "setOutboundHandler", raws(`"allowHosts"`, `{"p":1}`)); err != nil {
		t.Fatal(err)
	}
	storetest.WaitFor(t, "A to apply B's call", func() bool {
		o := inst.Overrides().Outbound
		return o != nil && string(o.Params) == `{"p":1}`
	})
	var wg sync.WaitGroup
	for i, r := range []*replica{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				if _, err := r.Call(ctx, "sbx-1", "denyHost", raws(fmt.Sprintf(`"h%d-%d.com"`, i, j))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for name, r := range map[string]*replica{"A": a, "B": b} {
		storetest.WaitFor(t, name+" to hold all 40 denied hosts", func() bool {
			x, _ := r.Get("sbx-1")
			return len(x.Overrides().DeniedHosts) == 40
		})
	}
	// The runtime A decides with is the one the overrides compile to.
	if rt := inst.Runtime(); rt == nil {
		t.Fatal("no runtime on A")
	}

	// A delete on B ends the instance on A, CA and all.
	if err := b.Delete(ctx, "sbx-1"); err != nil {
		t.Fatal(err)
	}
	storetest.WaitFor(t, "A to drop sbx-1", func() bool { _, ok := a.Get("sbx-1"); return !ok })
	if inst.Alive() || !slices.Equal(a.goneList(), []string{"sbx-1"}) {
		t.Fatalf("after a remote delete: alive %v, gone %v", inst.Alive(), a.goneList())
	}
	if _, ok := a.Authenticate("sbx-1", tok); ok {
		t.Fatal("a deleted instance authenticates on its home")
	}
	if len(b.goneList()) != 0 {
		t.Fatalf("B dropped CAs it never had: %v", b.goneList())
	}

	// A call on B right after a create on A: B reads the new id through.
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("now-%d", i)
		if _, _, err := a.Create(ctx, id, "Open"); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Call(ctx, id, "denyHost", raws(`"x.com"`)); err != nil || v.Home != "10.0.0.1:3128" {
			t.Fatalf("a call on B right after the create on A: %+v %v", v, err)
		}
	}
	if _, err := b.Lookup(ctx, "never-made"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup of an unknown id: %v", err)
	}
}

// TestFleetSources: source ranges belong to a replica's transparent
// listener: two homes may reuse one range, one home may not, and a
// replica attributes an address only to an instance it serves.
func TestFleetSources(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, redistest.Options{})
	a := newReplica(t, openRedis(t, rs.URL()), "10.0.0.1:3128")
	b := newReplica(t, openRedis(t, rs.URL()), "10.0.0.2:3128")
	r10 := netip.MustParsePrefix("10.0.3.0/24")
	onA, _, err := a.Create(ctx, "a1", "MySandbox", r10)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Create(ctx, "a2", "MySandbox", netip.MustParsePrefix("10.0.3.7/32")); !errors.Is(err, ErrSourceTaken) {
		t.Fatalf("an overlapping range on the same home: %v, want ErrSourceTaken", err)
	}
	storetest.WaitFor(t, "B to learn of a1", func() bool { _, ok := b.Get("a1"); return ok })
	if x, _ := b.Get("a1"); !slices.Equal(x.Sources(), []netip.Prefix{r10}) {
		t.Fatalf("a1's sources on B: %v", x.Sources())
	}
	if _, ok := b.BySource(netip.MustParseAddr("10.0.3.7")); ok {
		t.Fatal("B attributes an address to an instance it does not serve")
	}
	onB, _, err := b.Create(ctx, "b1", "MySandbox", r10)
	if err != nil {
		t.Fatalf("the same range on another home: %v", err)
	}
	for name, c := range map[string]struct {
		r    *replica
		want *Instance
	}{"A": {a, onA}, "B": {b, onB}} {
		if got, ok := c.r.BySource(netip.MustParseAddr("10.0.3.7")); !ok || got != c.want {
			t.Fatalf("%s attributes 10.0.3.7 to %v, want its own instance", name, got)
		}
	}
}

// TestFleetRestartAdopts: a replica started with the home of instances in
// the store serves them with new CAs; the others learn the new
// certificate; a recreated id is another instance.
func TestFleetRestartAdopts(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, redistest.Options{})
	a := newReplica(t, openRedis(t, rs.URL()), "10.0.0.1:3128")
	b := newReplica(t, openRedis(t, rs.URL()), "10.0.0.2:3128")
	_, tok, err := a.Create(ctx, "sbx-1", "MySandbox")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Call(ctx, "sbx-1", "allowHost", raws(`"kept.com"`)); err != nil {
		t.Fatal(err)
	}
	a.Close()

	a2 := newReplica(t, openRedis(t, rs.URL()), "10.0.0.1:3128")
	inst, ok := a2.Authenticate("sbx-1", tok)
	if !ok || a2.casOf("sbx-1") != 1 || !slices.Contains(inst.Overrides().AllowedHosts, "kept.com") {
		t.Fatalf("restarted home: authenticated %v, CAs %d", ok, a2.casOf("sbx-1"))
	}
	storetest.WaitFor(t, "B to learn the new certificate", func() bool {
		x, _ := b.Get("sbx-1")
		return string(x.CACert()) == string(inst.CACert())
	})

	// Deleted and created again elsewhere: the old incarnation is gone
	// from its home, the new one is another replica's.
	if err := b.Delete(ctx, "sbx-1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Create(ctx, "sbx-1", "Open"); err != nil {
		t.Fatal(err)
	}
	storetest.WaitFor(t, "A to see the new incarnation", func() bool {
		x, ok := a2.Get("sbx-1")
		return ok && x.Class() == "Open" && x.Home() == "10.0.0.2:3128"
	})
	if _, ok := a2.Authenticate("sbx-1", tok); ok {
		t.Fatal("the old token works for the new incarnation")
	}
	if !slices.Contains(a2.goneList(), "sbx-1") {
		t.Fatal("the old incarnation's CA was not dropped")
	}
}

// beforeSetHome is a store that runs a hook just before SetHome: another
// replica's write landing between a restart's read and its adoption.
type beforeSetHome struct {
	store.Store
	hook func()
}

func (s *beforeSetHome) SetHome(ctx context.Context, id, home string, caCert []byte) (store.Instance, error) {
	s.hook()
	return s.Store.SetHome(ctx, id, home, caCert)
}

// TestFleetRestartKeepsInterleavedWrite: a write by another replica
// between the restarting home's read and its SetHome is served at once;
// its notification carries no newer revision, so it is the only chance.
func TestFleetRestartKeepsInterleavedWrite(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, redistest.Options{})
	a := newReplica(t, openRedis(t, rs.URL()), "10.0.0.1:3128")
	b := newReplica(t, openRedis(t, rs.URL()), "10.0.0.2:3128")
	_, tok, err := a.Create(ctx, "sbx-1", "MySandbox")
	if err != nil {
		t.Fatal(err)
	}
	a.Close()

	wrote := false
	st := &beforeSetHome{Store: openRedis(t, rs.URL()), hook: func() {
		if _, err := b.Call(ctx, "sbx-1", "denyHost", raws(`"evil.com"`)); err != nil {
			t.Error(err)
		}
		wrote = true
	}}
	a2 := newReplica(t, st, "10.0.0.1:3128")
	if !wrote {
		t.Fatal("SetHome was not called")
	}
	inst, ok := a2.Authenticate("sbx-1", tok)
	if !ok {
		t.Fatal("the restarted home does not serve sbx-1")
	}
	if got := inst.Overrides().DeniedHosts; !slices.Equal(got, []string{"evil.com"}) {
		t.Fatalf("the restarted home serves denied hosts %v, want the deny written during its restart", got)
	}
}

// dropRemote is a store whose subscribers miss every change other
// processes make, until told to resync: a change feed that was away.
type dropRemote struct {
	store.Store
	mu   sync.Mutex
	subs []func(store.Change)
}

func (d *dropRemote) Subscribe(fn func(store.Change)) func() {
	d.mu.Lock()
	d.subs = append(d.subs, fn)
	d.mu.Unlock()
	return d.Store.Subscribe(func(c store.Change) {
		if !c.Remote {
			fn(c)
		}
	})
}

func (d *dropRemote) resync() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, fn := range d.subs {
		fn(store.Change{Kind: store.Resync, Remote: true})
	}
}

// TestFleetResyncCatchesUp: a replica that missed creates, updates and
// deletes made elsewhere has them all after a resync.
func TestFleetResyncCatchesUp(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, redistest.Options{})
	deaf := &dropRemote{Store: openRedis(t, rs.URL())}
	a := newReplica(t, deaf, "10.0.0.1:3128")
	b := newReplica(t, openRedis(t, rs.URL()), "10.0.0.2:3128")
	mine, _, err := a.Create(ctx, "mine", "MySandbox")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"stays", "goes"} {
		if _, _, err := b.Create(ctx, id, "MySandbox"); err != nil {
			t.Fatal(err)
		}
	}
	// A heard none of it; B's writes continue: update and delete its own,
	// update and delete A's.
	if _, err := b.Call(ctx, "stays", "denyHost", raws(`"x.com"`)); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "goes"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Call(ctx, "mine", "denyHost", raws(`"y.com"`)); err != nil {
		t.Fatal(err)
	}
	if got := len(a.List()); got != 1 {
		t.Fatalf("the deaf replica knows %d instances before the resync", got)
	}
	deaf.resync()
	storetest.WaitFor(t, "the resync to bring stays in", func() bool {
		x, ok := a.Get("stays")
		return ok && slices.Equal(x.Overrides().DeniedHosts, []string{"x.com"})
	})
	if _, ok := a.Get("goes"); ok {
		t.Fatal("a deleted instance came back")
	}
	if !slices.Equal(mine.Overrides().DeniedHosts, []string{"y.com"}) {
		t.Fatalf("A's own instance: %v", mine.Overrides().DeniedHosts)
	}
	if err := b.Delete(ctx, "mine"); err != nil {
		t.Fatal(err)
	}
	deaf.resync()
	storetest.WaitFor(t, "the resync to drop mine", func() bool { _, ok := a.Get("mine"); return !ok })
	if !slices.Contains(a.goneList(), "mine") {
		t.Fatal("the CA of a deleted instance was kept")
	}
}

// TestStoredOverridesAreTheRuntime: overrides read back from the store
// compile to the same decisions as the ones set (the remote path).
func TestStoredOverridesAreTheRuntime(t *testing.T) {
	o := chain.Overrides{AllowedHosts: []string{"a.com"}, ByHost: []chain.HostChoice{{Host: "z.com", Choice: chain.Choice{Method: "h", Params: json.RawMessage(`{"x":1}`)}}, {Host: "*.b.com", Choice: chain.Choice{Method: "g"}}}}
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	var back chain.Overrides
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(back)
	if string(b) != string(b2) {
		t.Fatalf("overrides do not survive the store:\n%s\n%s", b, b2)
	}
}
