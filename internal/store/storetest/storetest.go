// Package storetest is the conformance suite every store backend passes:
// instances, overrides, change notifications, KV with TTL and listing, and
// persistence across a reopen. Backends that several processes share also
// pass the fleet part: other handles' writes are reported as remote
// changes, concurrent creates of one id have one winner, concurrent
// read-modify-writes lose nothing, and a home has one claimant.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/store"
)

// Backend opens stores for the suite.
type Backend struct {
	// Fresh returns an empty store backed by new storage, closed by the
	// test's cleanup.
	Fresh func(t *testing.T) (s store.Store, reopen func(t *testing.T) store.Store)
	// Second, for a shared backend, opens another handle onto the storage
	// of a store made by Fresh, as another replica would; closed by the
	// test's cleanup. Nil for a backend one process owns.
	Second func(t *testing.T, s store.Store) store.Store
}

// RunKV runs the KV contract, paging and expiry against bindings that
// live outside a store (memkv); fresh returns an empty one.
func RunKV(t *testing.T, fresh func(t *testing.T, binding string) store.KV) {
	t.Run("KV", func(t *testing.T) { KV(t, fresh(t, "CACHE")) })
	t.Run("KVPaging", func(t *testing.T) { testKVPaging(t, fresh(t, "PAGES")) })
	t.Run("KVExpiry", func(t *testing.T) { testKVExpiry(t, fresh(t, "TTL")) })
}

// Run runs the whole suite.
func Run(t *testing.T, b Backend) {
	t.Run("Instances", func(t *testing.T) { testInstances(t, b) })
	t.Run("UpdateOverrides", func(t *testing.T) { testUpdateOverrides(t, b) })
	t.Run("KV", func(t *testing.T) { testKV(t, b) })
	fresh := func(t *testing.T, binding string) store.KV { s, _ := b.Fresh(t); return s.KV(binding) }
	t.Run("KVPaging", func(t *testing.T) { testKVPaging(t, fresh(t, "PAGES")) })
	t.Run("KVExpiry", func(t *testing.T) { testKVExpiry(t, fresh(t, "TTL")) })
	t.Run("CanceledContext", func(t *testing.T) { testCanceled(t, b) })
	if b.Second == nil {
		return
	}
	t.Run("Fleet/RemoteChanges", func(t *testing.T) { testRemoteChanges(t, b) })
	t.Run("Fleet/CreateRace", func(t *testing.T) { testCreateRace(t, b) })
	t.Run("Fleet/ConcurrentUpdates", func(t *testing.T) { testConcurrentUpdates(t, b) })
	t.Run("Fleet/ClaimHome", func(t *testing.T) { testClaimHome(t, b) })
}

func testInstances(t *testing.T, b Backend) {
	ctx := context.Background()
	s, reopen := b.Fresh(t)
	var changes []store.Change
	var mu sync.Mutex
	unsub := s.Subscribe(func(c store.Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() })

	created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	a := store.Instance{ID: "sbx-a", Class: "A", Created: created, TokenHash: [32]byte{1, 2, 3},
		Home: "10.0.0.1:3128", CACert: []byte("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"),
		Sources: []netip.Prefix{netip.MustParsePrefix("10.0.3.7/32"), netip.MustParsePrefix("fd00::/64")}}
	bb := store.Instance{ID: "sbx-b", Class: "B", Created: created, TokenHash: [32]byte{9}}
	for _, inst := range []store.Instance{a, bb} {
		if err := s.CreateInstance(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateInstance(ctx, a); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate create: %v, want ErrExists", err)
	}
	ov := json.RawMessage(`{"allowedHosts":[],"deniedHosts":["evil.com"],"outboundHandler":{"method":"h","params":{"x":1}},"outboundByHost":null}`)
	if _, err := s.UpdateOverrides(ctx, "sbx-a", set(ov)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateOverrides(ctx, "sbx-missing", set(ov)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("overrides of a missing instance: %v, want ErrNotFound", err)
	}
	if _, err := s.Instance(ctx, "sbx-missing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Instance of a missing id: %v, want ErrNotFound", err)
	}
	if _, err := s.SetHome(ctx, "sbx-missing", "h:1", nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetHome of a missing instance: %v, want ErrNotFound", err)
	}
	if got, err := s.Instance(ctx, "sbx-a"); err != nil || got.Rev != 2 || !jsonEqual(got.Overrides, ov) || got.Home != a.Home {
		t.Fatalf("Instance(sbx-a) after one overrides write = %+v, %v; want rev 2, the overrides and the home", got, err)
	}
	if err := s.DeleteInstance(ctx, "sbx-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteInstance(ctx, "sbx-b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	unsub()
	if err := s.CreateInstance(ctx, bb); err != nil { // recreate: no stale overrides
		t.Fatal(err)
	}
	mu.Lock()
	want := []store.Change{
		{Kind: store.InstanceCreated, ID: "sbx-a"},
		{Kind: store.InstanceCreated, ID: "sbx-b"},
		{Kind: store.OverridesChanged, ID: "sbx-a"},
		{Kind: store.InstanceDeleted, ID: "sbx-b"},
	}
	// A write that fails announces nothing.
	got := slices.Clone(changes)
	mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("changes %+v, want %+v (and nothing after unsubscribe)", got, want)
	}

	check := func(s store.Store, when string) {
		t.Helper()
		ins, err := s.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ins) != 2 || ins[0].ID != "sbx-a" || ins[1].ID != "sbx-b" {
			t.Fatalf("instances %s: %+v", when, ins)
		}
		ga := ins[0]
		if ga.Class != "A" || ga.TokenHash != a.TokenHash || !ga.Created.Equal(created) || !slices.Equal(ga.Sources, a.Sources) || ins[1].Sources != nil ||
			ga.Home != a.Home || string(ga.CACert) != string(a.CACert) || ga.Rev != 2 {
			t.Errorf("instance a %s: %+v", when, ga)
		}
		if ins[1].Rev != 1 || ins[1].Home != "" || ins[1].CACert != nil {
			t.Errorf("instance b %s: %+v, want rev 1 and no home or certificate", when, ins[1])
		}
		if !jsonEqual(ga.Overrides, ov) {
			t.Errorf("overrides %s:\n got %s\nwant %s", when, ga.Overrides, ov)
		}
		if len(ins[1].Overrides) != 0 {
			t.Errorf("recreated instance kept old overrides %s: %s", when, ins[1].Overrides)
		}
	}
	check(s, "before reopen")
	check(reopen(t), "after reopen")
}

// testUpdateOverrides: the read-modify-write sees the current overrides,
// an error from fn writes nothing, and SetHome replaces home and
// certificate; each write bumps the revision.
func testUpdateOverrides(t *testing.T, b Backend) {
	ctx := context.Background()
	s, reopen := b.Fresh(t)
	if err := s.CreateInstance(ctx, store.Instance{ID: "x", Class: "C", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	var changes []store.Change
	var mu sync.Mutex
	defer s.Subscribe(func(c store.Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() })()
	step := func(add string) func(json.RawMessage) (json.RawMessage, error) {
		return func(cur json.RawMessage) (json.RawMessage, error) {
			seen = append(seen, string(cur))
			var l []string
			if cur != nil {
				if err := json.Unmarshal(cur, &l); err != nil {
					return nil, err
				}
			}
			return json.Marshal(append(l, add))
		}
	}
	inst, err := s.UpdateOverrides(ctx, "x", step("a"))
	if err != nil || string(inst.Overrides) != `["a"]` || inst.Rev != 2 {
		t.Fatalf("first update = %+v, %v", inst, err)
	}
	if inst, err = s.UpdateOverrides(ctx, "x", step("b")); err != nil || string(inst.Overrides) != `["a","b"]` || inst.Rev != 3 {
		t.Fatalf("second update = %+v, %v", inst, err)
	}
	if !slices.Equal(seen, []string{"", `["a"]`}) {
		t.Fatalf("fn saw %q, want the overrides as they were", seen)
	}
	boom := errors.New("boom")
	if _, err := s.UpdateOverrides(ctx, "x", func(json.RawMessage) (json.RawMessage, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("an update whose fn fails = %v, want its error", err)
	}
	if _, err := s.UpdateOverrides(ctx, "nope", step("z")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing instance = %v, want ErrNotFound", err)
	}
	cert := []byte("-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n")
	if inst, err = s.SetHome(ctx, "x", "127.0.0.1:4000", cert); err != nil || inst.Home != "127.0.0.1:4000" || string(inst.CACert) != string(cert) || inst.Rev != 4 || string(inst.Overrides) != `["a","b"]` {
		t.Fatalf("SetHome = %+v, %v", inst, err)
	}
	mu.Lock()
	got := slices.Clone(changes)
	mu.Unlock()
	want := []store.Change{{Kind: store.OverridesChanged, ID: "x"}, {Kind: store.OverridesChanged, ID: "x"}, {Kind: store.HomeChanged, ID: "x"}}
	if !slices.Equal(got, want) {
		t.Fatalf("changes %+v, want %+v (nothing for the failed updates)", got, want)
	}
	inst, err = reopen(t).Instance(ctx, "x")
	if err != nil || inst.Home != "127.0.0.1:4000" || string(inst.CACert) != string(cert) || inst.Rev != 4 || string(inst.Overrides) != `["a","b"]` {
		t.Fatalf("after reopen: %+v, %v", inst, err)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

// KV checks the contract of one binding's KV, in memory or in a store:
// empty and overlong keys, empty values, listing and paging in key order,
// deleting what is missing. It leaves a/2, a/3 and b/1 stored.
func KV(t *testing.T, kv store.KV) {
	t.Helper()
	ctx := context.Background()
	if _, ok, err := kv.Get(ctx, "missing"); ok || err != nil {
		t.Fatalf("Get on an empty binding: %v %v", ok, err)
	}
	for _, p := range []struct{ k, v string }{{"a/1", "one"}, {"a/2", "two"}, {"a/3", ""}, {"b/1", "b"}} {
		if err := kv.Put(ctx, p.k, []byte(p.v), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Put(ctx, "", []byte("x"), time.Time{}); err == nil {
		t.Fatal("empty key accepted")
	}
	if err := kv.Put(ctx, strings.Repeat("k", store.MaxKeyBytes+1), []byte("x"), time.Time{}); err == nil {
		t.Fatal("overlong key accepted")
	}
	if v, ok, _ := kv.Get(ctx, "a/1"); !ok || string(v) != "one" {
		t.Fatalf("Get a/1 = %q %v", v, ok)
	}
	if v, ok, _ := kv.Get(ctx, "a/3"); !ok || v == nil || len(v) != 0 {
		t.Fatalf("empty value: %q %v", v, ok)
	}
	keys, next, err := kv.List(ctx, "a/", "", 0)
	if err != nil || !slices.Equal(keys, []string{"a/1", "a/2", "a/3"}) || next != "" {
		t.Fatalf("List a/ = %v %q %v", keys, next, err)
	}
	keys, next, _ = kv.List(ctx, "", "", 2)
	if !slices.Equal(keys, []string{"a/1", "a/2"}) || next == "" {
		t.Fatalf("page 1 = %v %q", keys, next)
	}
	keys, next, _ = kv.List(ctx, "", next, 2)
	if !slices.Equal(keys, []string{"a/3", "b/1"}) || next != "" {
		t.Fatalf("page 2 = %v %q", keys, next)
	}
	if err := kv.Delete(ctx, "a/1"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "never"); err != nil {
		t.Fatal(err)
	}
}

func testKV(t *testing.T, b Backend) {
	ctx := context.Background()
	s, reopen := b.Fresh(t)
	kv := s.KV("CACHE")
	other := s.KV("OTHER")
	var changes []store.Change
	var mu sync.Mutex
	defer s.Subscribe(func(c store.Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() })()

	KV(t, kv)
	if _, ok, _ := other.Get(ctx, "b/1"); ok {
		t.Fatal("bindings share keys")
	}
	if err := other.Delete(ctx, "never"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	sawPut := slices.Contains(changes, store.Change{Kind: store.KVChanged, Binding: "CACHE", Key: "b/1"})
	sawDel := slices.Contains(changes, store.Change{Kind: store.KVChanged, Binding: "CACHE", Key: "a/1"})
	mu.Unlock()
	if !sawPut || !sawDel {
		t.Errorf("KV writes not notified: put %v, delete %v", sawPut, sawDel)
	}

	kv2 := reopen(t).KV("CACHE")
	if keys, _, _ := kv2.List(ctx, "", "", 0); !slices.Equal(keys, []string{"a/2", "a/3", "b/1"}) {
		t.Fatalf("keys after reopen = %v", keys)
	}
	if v, ok, _ := kv2.Get(ctx, "b/1"); !ok || string(v) != "b" {
		t.Fatalf("value after reopen = %q %v", v, ok)
	}
}

// testKVPaging lists more keys than a page holds, with expired keys and
// keys outside the prefix around the pages, and checks every page.
func testKVPaging(t *testing.T, kv store.KV) {
	ctx := context.Background()
	var want []string
	past := time.Now().Add(-time.Second)
	for i := 0; i < 1205; i++ {
		k := fmt.Sprintf("p/%05d", i)
		if i%10 == 3 { // written with an expiry already past: never listed
			if err := kv.Put(ctx, k, []byte("x"), past); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := kv.Put(ctx, k, []byte("x"), time.Time{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, k)
	}
	for _, k := range []string{"a", "p", "p0", "q/1", "p/\xff"} {
		if err := kv.Put(ctx, k, []byte("x"), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	want = append(want, "p/\xff")
	// Default page size: 1000.
	keys, next, err := kv.List(ctx, "p/", "", 0)
	if err != nil || len(keys) != 1000 || next != keys[999] || !slices.Equal(keys, want[:1000]) {
		t.Fatalf("first default page: %d keys, next %q, %v", len(keys), next, err)
	}
	rest, next2, err := kv.List(ctx, "p/", next, 0)
	if err != nil || next2 != "" || !slices.Equal(rest, want[1000:]) {
		t.Fatalf("second default page: %v, next %q, %v; want %v", rest, next2, err, want[1000:])
	}
	// Small pages, walking the whole prefix.
	var all []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 200 {
			t.Fatal("paging does not end")
		}
		page, next, err := kv.List(ctx, "p/", cursor, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 7 || (next != "" && len(page) != 7) {
			t.Fatalf("page after %q: %d keys, next %q", cursor, len(page), next)
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if !slices.Equal(all, want) {
		t.Fatalf("paging by 7 listed %d keys, want %d", len(all), len(want))
	}
	// A cursor before the prefix starts at the prefix; one past it ends.
	if page, _, _ := kv.List(ctx, "p/", "a", 2); !slices.Equal(page, want[:2]) {
		t.Fatalf("cursor before the prefix: %v", page)
	}
	if page, next, _ := kv.List(ctx, "p/", "q", 2); len(page) != 0 || next != "" {
		t.Fatalf("cursor past the prefix: %v %q", page, next)
	}
}

// testKVExpiry uses the wall clock: an expiry in the past hides a key at
// once, one far ahead keeps it, and a short one ends within a bound that a
// busy machine cannot miss.
func testKVExpiry(t *testing.T, kv store.KV) {
	ctx := context.Background()
	if err := kv.Put(ctx, "past", []byte("x"), time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := kv.Get(ctx, "past"); ok {
		t.Fatal("a key that expired before it was written is readable")
	}
	if err := kv.Put(ctx, "later", []byte("x"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := kv.Get(ctx, "later"); !ok {
		t.Fatal("a key with an expiry an hour ahead is gone")
	}
	if err := kv.Put(ctx, "soon", []byte("x"), time.Now().Add(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, ok, err := kv.Get(ctx, "soon")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a key with a 200 ms expiry is still readable after 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	keys, _, _ := kv.List(ctx, "", "", 0)
	if !slices.Equal(keys, []string{"later"}) {
		t.Fatalf("List after expiry = %v, want [later]", keys)
	}
}

func testCanceled(t *testing.T, b Backend) {
	s, _ := b.Fresh(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.CreateInstance(ctx, store.Instance{ID: "x"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateInstance with a canceled context: %v", err)
	}
	if err := s.KV("K").Put(ctx, "k", nil, time.Time{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("KV Put with a canceled context: %v", err)
	}
}

// WaitFor polls cond until it holds, failing after a deadline no busy
// machine misses. Tests of stores shared by processes wait with it for
// what another handle reports.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testRemoteChanges: each kind of write on one handle reaches the other's
// subscribers as a remote change, and not its own as one.
func testRemoteChanges(t *testing.T, b Backend) {
	ctx := context.Background()
	s1, _ := b.Fresh(t)
	s2 := b.Second(t, s1)
	var mu sync.Mutex
	var got1, got2 []store.Change
	defer s1.Subscribe(func(c store.Change) { mu.Lock(); got1 = append(got1, c); mu.Unlock() })()
	defer s2.Subscribe(func(c store.Change) { mu.Lock(); got2 = append(got2, c); mu.Unlock() })()

	key := "dir/ü\x00\xffkey"
	if err := s1.CreateInstance(ctx, store.Instance{ID: "r", Class: "C", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.UpdateOverrides(ctx, "r", set(json.RawMessage(`{"deniedHosts":["x.com"]}`))); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.SetHome(ctx, "r", "127.0.0.1:1", []byte("cert")); err != nil {
		t.Fatal(err)
	}
	if err := s1.KV("K").Put(ctx, key, []byte("v"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s1.DeleteInstance(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	want := []store.Change{
		{Kind: store.InstanceCreated, ID: "r", Remote: true},
		{Kind: store.OverridesChanged, ID: "r", Remote: true},
		{Kind: store.HomeChanged, ID: "r", Remote: true},
		{Kind: store.KVChanged, Binding: "K", Key: key, Remote: true},
		{Kind: store.InstanceDeleted, ID: "r", Remote: true},
	}
	WaitFor(t, "the other handle to see five changes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got2) >= len(want)
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got2, want) {
		t.Fatalf("remote changes %+v\nwant %+v", got2, want)
	}
	for _, c := range got1 {
		if c.Remote {
			t.Fatalf("the writer saw its own write as remote: %+v", c)
		}
	}
	if len(got1) != len(want) {
		t.Fatalf("the writer saw %d changes, want %d", len(got1), len(want))
	}
	if v, ok, err := s2.KV("K").Get(ctx, key); !ok || string(v) != "v" || err != nil {
		t.Fatalf("the other handle reads %q %v %v", v, ok, err)
	}
}

// testCreateRace: handles race to create one id; exactly one wins.
func testCreateRace(t *testing.T, b Backend) {
	ctx := context.Background()
	s1, _ := b.Fresh(t)
	s2 := b.Second(t, s1)
	for round := 0; round < 20; round++ {
		id := fmt.Sprintf("race-%d", round)
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			s := s1
			if i%2 == 1 {
				s = s2
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.CreateInstance(ctx, store.Instance{ID: id, Class: "C", TokenHash: [32]byte{byte(i)}, Created: time.Now()})
			}()
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Fatalf("%s: creates %d and %d both succeeded", id, won, i)
			case err == nil:
				won = i
			case !errors.Is(err, store.ErrExists):
				t.Fatalf("%s: create %d: %v, want ErrExists", id, i, err)
			}
		}
		if won < 0 {
			t.Fatalf("%s: no create succeeded", id)
		}
		inst, err := s2.Instance(ctx, id)
		if err != nil || inst.TokenHash != [32]byte{byte(won)} {
			t.Fatalf("%s: stored %+v %v, want the winner's (%d)", id, inst, err, won)
		}
	}
}

// testConcurrentUpdates: read-modify-writes from two handles at once; each
// appends its own items, and none is lost.
func testConcurrentUpdates(t *testing.T, b Backend) {
	ctx := context.Background()
	s1, _ := b.Fresh(t)
	s2 := b.Second(t, s1)
	if err := s1.CreateInstance(ctx, store.Instance{ID: "u", Class: "C", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	const each = 25
	var wg sync.WaitGroup
	errs := make(chan error, 4*each)
	for w, s := range []store.Store{s1, s2, s1, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				item := fmt.Sprintf("w%d-%d", w, i)
				_, err := s.UpdateOverrides(ctx, "u", func(cur json.RawMessage) (json.RawMessage, error) {
					var l []string
					if cur != nil {
						if err := json.Unmarshal(cur, &l); err != nil {
							return nil, err
						}
					}
					return json.Marshal(append(l, item))
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	inst, err := s2.Instance(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	var l []string
	if err := json.Unmarshal(inst.Overrides, &l); err != nil {
		t.Fatal(err)
	}
	if len(l) != 4*each || inst.Rev != 4*each+1 {
		t.Fatalf("%d items and rev %d after %d updates: an update was lost", len(l), inst.Rev, 4*each)
	}
}

// testClaimHome: a home has one claimant; closing releases the claim.
func testClaimHome(t *testing.T, b Backend) {
	ctx := context.Background()
	s1, _ := b.Fresh(t)
	s2 := b.Second(t, s1)
	sh1, ok1 := s1.(store.Shared)
	sh2, ok2 := s2.(store.Shared)
	if !ok1 || !ok2 {
		t.Fatal("a backend with Second must implement store.Shared")
	}
	if err := sh1.ClaimHome(ctx, "10.0.0.1:3128"); err != nil {
		t.Fatal(err)
	}
	if err := sh2.ClaimHome(ctx, "10.0.0.2:3128"); err != nil {
		t.Fatalf("another home: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	s3 := b.Second(t, s1).(store.Shared)
	if err := s3.ClaimHome(short, "10.0.0.1:3128"); err == nil {
		t.Fatal("a second claim on a held home succeeded")
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s3.ClaimHome(ctx, "10.0.0.1:3128"); err != nil {
		t.Fatalf("claim after the holder closed: %v", err)
	}
	if h := sh2.Health(); !h.Up || h.ClaimLost {
		t.Fatalf("health %+v", h)
	}
}

// set is an UpdateOverrides step that replaces the overrides with v.
func set(v json.RawMessage) func(json.RawMessage) (json.RawMessage, error) {
	return func(json.RawMessage) (json.RawMessage, error) { return v, nil }
}
