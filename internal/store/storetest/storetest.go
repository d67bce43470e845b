// Package storetest is the conformance suite every store backend passes:
// instances, overrides, change notifications, KV with TTL and listing, and
// persistence across a reopen.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
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
}

// Run runs the whole suite.
func Run(t *testing.T, b Backend) {
	t.Run("Instances", func(t *testing.T) { testInstances(t, b) })
	t.Run("KV", func(t *testing.T) { testKV(t, b) })
	t.Run("KVExpiry", func(t *testing.T) { testKVExpiry(t, b) })
	t.Run("CanceledContext", func(t *testing.T) { testCanceled(t, b) })
}

func testInstances(t *testing.T, b Backend) {
	ctx := context.Background()
	s, reopen := b.Fresh(t)
	var changes []store.Change
	var mu sync.Mutex
	unsub := s.Subscribe(func(c store.Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() })

	created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	a := store.Instance{ID: "sbx-a", Class: "A", Created: created, TokenHash: [32]byte{1, 2, 3},
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
	if err := s.PutOverrides(ctx, "sbx-a", ov); err != nil {
		t.Fatal(err)
	}
	if err := s.PutOverrides(ctx, "sbx-missing", ov); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("overrides of a missing instance: %v, want ErrNotFound", err)
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
		if ga.Class != "A" || ga.TokenHash != a.TokenHash || !ga.Created.Equal(created) || !slices.Equal(ga.Sources, a.Sources) || ins[1].Sources != nil {
			t.Errorf("instance a %s: %+v", when, ga)
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

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

func testKV(t *testing.T, b Backend) {
	ctx := context.Background()
	s, reopen := b.Fresh(t)
	kv := s.KV("CACHE")
	other := s.KV("OTHER")
	var changes []store.Change
	var mu sync.Mutex
	defer s.Subscribe(func(c store.Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() })()

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
	if _, ok, _ := other.Get(ctx, "a/1"); ok {
		t.Fatal("bindings share keys")
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
	keys, _, _ = kv2.List(ctx, "", "", 0)
	if !slices.Equal(keys, []string{"a/2", "a/3", "b/1"}) {
		t.Fatalf("keys after reopen = %v", keys)
	}
	if v, ok, _ := kv2.Get(ctx, "b/1"); !ok || string(v) != "b" {
		t.Fatalf("value after reopen = %q %v", v, ok)
	}
}

// testKVExpiry uses the wall clock: an expiry in the past hides a key at
// once, one far ahead keeps it, and a short one ends within a bound that a
// busy machine cannot miss.
func testKVExpiry(t *testing.T, b Backend) {
	ctx := context.Background()
	s, _ := b.Fresh(t)
	kv := s.KV("TTL")
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
