package memkv

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/internal/store/storetest"
)

func TestKVContract(t *testing.T) {
	storetest.RunKV(t, func(_ *testing.T, binding string) store.KV { return New(binding, nil) })
}

// TestKV: what memkv adds to the contract.
func TestKV(t *testing.T) {
	ctx := context.Background()
	kv := New("CACHE", nil)
	storetest.KV(t, kv)
	if err := kv.Put(ctx, "", []byte("x"), time.Time{}); err == nil || !strings.Contains(err.Error(), "CACHE") {
		t.Fatalf("empty key: %v", err)
	}
	// The caller owns what it passed and what it got.
	buf := []byte("mutable")
	kv.Put(ctx, "m", buf, time.Time{})
	buf[0] = 'X'
	got, _, _ := kv.Get(ctx, "m")
	got[1] = 'Y'
	if again, _, _ := kv.Get(ctx, "m"); string(again) != "mutable" {
		t.Fatalf("stored value changed through a caller's slice: %q", again)
	}
	kv.Delete(ctx, "m")
	snap := kv.Snapshot()
	if len(snap) != 3 || string(snap["b/1"]) != "b" {
		t.Fatalf("Snapshot = %q", snap)
	}
}

func TestKVExpiry(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	kv := New("TTL", func() time.Time { return now })
	kv.Put(ctx, "past", []byte("x"), now.Add(-time.Second))
	kv.Put(ctx, "soon", []byte("x"), now.Add(time.Minute))
	kv.Put(ctx, "never", []byte("x"), time.Time{})
	if _, ok, _ := kv.Get(ctx, "past"); ok {
		t.Fatal("an expired key is readable")
	}
	if _, ok, _ := kv.Get(ctx, "soon"); !ok {
		t.Fatal("a key before its expiry is gone")
	}
	now = now.Add(time.Minute)
	if _, ok, _ := kv.Get(ctx, "soon"); ok {
		t.Fatal("a key at its expiry is readable")
	}
	if keys, _, _ := kv.List(ctx, "", "", 0); !slices.Equal(keys, []string{"never"}) {
		t.Fatalf("List after expiry = %v", keys)
	}
	if snap := kv.Snapshot(); len(snap) != 1 {
		t.Fatalf("Snapshot after expiry = %q", snap)
	}
}

func TestKVCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	kv := New("K", nil)
	if err := kv.Put(ctx, "k", nil, time.Time{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: %v", err)
	}
	if _, _, err := kv.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get: %v", err)
	}
	if _, _, err := kv.List(ctx, "", "", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("List: %v", err)
	}
	if err := kv.Delete(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Delete: %v", err)
	}
}
