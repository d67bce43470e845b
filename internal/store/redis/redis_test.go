package redis

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/internal/store/redis/redistest"
	"github.com/outbound-dev/outbound/internal/store/storetest"
)

var prefixes atomic.Int64

// openAt opens a store on srv under prefix, closed by the test's cleanup.
func openAt(t *testing.T, url, prefix string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{URL: url, Prefix: prefix, Logger: slog.New(slog.DiscardHandler), SweepEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	storetest.Run(t, storetest.Backend{
		Fresh: func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
			prefix := fmt.Sprintf("t%d:", prefixes.Add(1))
			s := openAt(t, srv.URL(), prefix)
			return s, func(t *testing.T) store.Store {
				s.Close()
				return openAt(t, srv.URL(), prefix)
			}
		},
		Second: func(t *testing.T, s store.Store) store.Store {
			return openAt(t, srv.URL(), s.(*Store).keys.p)
		},
	})
}

// ACL is the Redis user the docs recommend for a fleet: its own keys and
// channel, no admin or dangerous commands.
const ACL = "on >PASS ~outbound:* &outbound:* +@connection +@read +@write +@scripting +@pubsub +@transaction -@dangerous"

// TestConformanceWithDocumentedACL runs the whole suite as the user the
// docs recommend, so that the ACL they print is known to be enough.
func TestConformanceWithDocumentedACL(t *testing.T) {
	const pass = "acl-pass-0123456789"
	srv := redistest.Start(t, redistest.Options{Users: []string{"outbound " + strings.Replace(ACL, "PASS", pass, 1)}})
	url := fmt.Sprintf("redis://outbound:%s@%s/0", pass, srv.Addr())
	storetest.Run(t, storetest.Backend{
		Fresh: func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
			prefix := fmt.Sprintf("outbound:acl%d:", prefixes.Add(1))
			s := openAt(t, url, prefix)
			return s, func(t *testing.T) store.Store {
				s.Close()
				return openAt(t, url, prefix)
			}
		},
		Second: func(t *testing.T, s store.Store) store.Store {
			return openAt(t, url, s.(*Store).keys.p)
		},
	})
	s := openAt(t, url, "outbound:sweep:")
	if _, err := s.Sweep(context.Background()); err != nil {
		t.Fatalf("Sweep as the documented user: %v", err)
	}
}

// TestOutage stops Redis under two handles: writes fail with
// ErrUnavailable and name the cause, health goes down, a KV value read
// before the outage is still answered; after a restart health comes
// back, subscribers are told to resync, writes work and nothing
// acknowledged before the outage is lost.
func TestOutage(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, redistest.Options{})
	s1 := openAt(t, srv.URL(), "o:")
	s2 := openAt(t, srv.URL(), "o:")
	var resyncs atomic.Int64
	var sawPut atomic.Bool
	defer s2.Subscribe(func(c store.Change) {
		switch {
		case c.Kind == store.Resync:
			resyncs.Add(1)
		case c.Kind == store.KVChanged && c.Key == "k":
			sawPut.Store(true)
		}
	})()
	if err := s1.CreateInstance(ctx, store.Instance{ID: "a", Class: "C", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s1.KV("K").Put(ctx, "k", []byte("before"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	// A read racing the put's own announcement is not remembered (it might
	// be older than the announced write); read after it.
	storetest.WaitFor(t, "the put to be announced", sawPut.Load)
	if v, ok, err := s2.KV("K").Get(ctx, "k"); string(v) != "before" || !ok || err != nil {
		t.Fatalf("get before the outage: %q %v %v", v, ok, err)
	}
	if _, ok, err := s2.KV("K").Get(ctx, "absent"); ok || err != nil {
		t.Fatalf("get of a missing key before the outage: %v %v", ok, err)
	}

	srv.Stop()
	storetest.WaitFor(t, "health to go down", func() bool { return !s2.Health().Up })
	h := s2.Health()
	if h.Err == "" || h.Backend != "redis" || h.Addr != "redis://"+srv.Addr()+"/0" {
		t.Fatalf("health while down: %+v", h)
	}
	_, err := s1.UpdateOverrides(ctx, "a", func(json.RawMessage) (json.RawMessage, error) { return json.RawMessage(`{}`), nil })
	if !errors.Is(err, store.ErrUnavailable) || !strings.HasPrefix(err.Error(), "store unavailable: ") {
		t.Fatalf("write during the outage: %v, want store unavailable: …", err)
	}
	if err := s1.KV("K").Put(ctx, "k2", []byte("x"), time.Time{}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("KV put during the outage: %v", err)
	}
	// Last known state: the value and the absence read before.
	if v, ok, err := s2.KV("K").Get(ctx, "k"); string(v) != "before" || !ok || err != nil {
		t.Fatalf("get during the outage: %q %v %v, want the last known value", v, ok, err)
	}
	if _, ok, err := s2.KV("K").Get(ctx, "absent"); ok || err != nil {
		t.Fatalf("get of a missing key during the outage: %v %v", ok, err)
	}
	if _, _, err := s2.KV("K").Get(ctx, "never-read"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("get of a key never read, during the outage: %v", err)
	}

	srv.Restart()
	storetest.WaitFor(t, "health to come back", func() bool { return s2.Health().Up && s1.Health().Up })
	storetest.WaitFor(t, "a resync after the reconnect", func() bool { return resyncs.Load() > 0 })
	if s2.Health().Resyncs == 0 {
		t.Fatalf("health counts no resync: %+v", s2.Health())
	}
	if _, err := s1.UpdateOverrides(ctx, "a", func(json.RawMessage) (json.RawMessage, error) { return json.RawMessage(`{"x":1}`), nil }); err != nil {
		t.Fatalf("write after the outage: %v", err)
	}
	inst, err := s2.Instance(ctx, "a")
	if err != nil || string(inst.Overrides) != `{"x":1}` {
		t.Fatalf("instance after the outage: %+v %v", inst, err)
	}
	if v, ok, err := s2.KV("K").Get(ctx, "k"); string(v) != "before" || !ok || err != nil {
		t.Fatalf("KV after the outage: %q %v %v", v, ok, err)
	}
}

// TestKilledRedisKeepsAcknowledgedWrites: with appendfsync always (as
// the docs ask), a SIGKILL of Redis loses no acknowledged write.
func TestKilledRedisKeepsAcknowledgedWrites(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, redistest.Options{})
	s := openAt(t, srv.URL(), "k:")
	for i := 0; i < 50; i++ {
		if err := s.KV("K").Put(ctx, fmt.Sprint(i), []byte("v"), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	srv.Kill()
	srv.Restart()
	var keys []string
	storetest.WaitFor(t, "the keys to be readable after the restart", func() bool {
		var err error
		keys, _, err = s.KV("K").List(ctx, "", "", 0)
		return err == nil
	})
	if len(keys) != 50 {
		t.Fatalf("%d keys after SIGKILL of Redis, want 50", len(keys))
	}
}

// TestClaimLapses: a claim left by a process that died (simulated by a
// claim key with a short expiry under another owner) is taken once it
// lapses.
func TestClaimLapses(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, redistest.Options{})
	s := openAt(t, srv.URL(), "c:")
	if err := s.c.Set(ctx, s.keys.claim("h:1"), "dead-process", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.ClaimHome(ctx, "h:1"); err != nil {
		t.Fatalf("claim after the dead process's lapsed: %v", err)
	}
	if v, _ := s.c.Get(ctx, s.keys.claim("h:1")).Result(); v != s.origin {
		t.Fatalf("claim holds %q", v)
	}
}

// TestPasswordNeverInErrorsOrLogs: a URL with a password connects; a
// wrong one fails at once; neither message nor log holds the password.
func TestPasswordNeverInErrorsOrLogs(t *testing.T) {
	const pass = "s3cret-redis-pass"
	srv := redistest.Start(t, redistest.Options{Password: pass})
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := Open(context.Background(), Options{URL: srv.URL(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != "redis://"+srv.Addr()+"/0" {
		t.Errorf("Addr %q", s.Addr())
	}
	s.Close()
	bad := strings.Replace(srv.URL(), pass, "wrong-"+pass, 1)
	_, err = Open(context.Background(), Options{URL: bad, Logger: log, ConnectWait: time.Minute})
	if err == nil {
		t.Fatal("a wrong password connected")
	}
	if strings.Contains(err.Error(), pass) || strings.Contains(logs.String(), pass) {
		t.Fatalf("the password leaked: %v\n%s", err, logs.String())
	}
	for _, u := range []string{"redis://:" + pass + "@[::1", "http://:" + pass + "@host:1/0", "redis://:" + pass + "@host:1/notadb"} {
		_, _, err := ParseURL(u)
		if err == nil || strings.Contains(err.Error(), pass) {
			t.Errorf("ParseURL(%q) = %v", strings.ReplaceAll(u, pass, "PASS"), err)
		}
	}
}

// TestTLS: rediss:// with tls_ca naming the server's certificate works;
// without it the server is not trusted, and that fails at once rather
// than being retried as an outage.
func TestTLS(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{TLS: true})
	s := openAt(t, srv.URL(), "tls:")
	if err := s.KV("K").Put(context.Background(), "k", []byte("v"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Addr(), "rediss://") {
		t.Fatalf("Addr %s", s.Addr())
	}
	untrusted := strings.Split(srv.URL(), "?")[0]
	_, err := Open(context.Background(), Options{URL: untrusted, Logger: slog.New(slog.DiscardHandler), ConnectWait: 10 * time.Minute})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an untrusted server: %v", err)
	}
	plain := strings.Replace(untrusted, "rediss://", "redis://", 1)
	if _, err := Open(context.Background(), Options{URL: plain, Logger: slog.New(slog.DiscardHandler), ConnectWait: 2 * time.Second}); err == nil {
		t.Fatal("plain Redis protocol to a TLS port connected")
	}
}

func TestParseURL(t *testing.T) {
	o, addr, err := ParseURL("rediss://user:pw@redis.example:6380/3")
	if err != nil || o.TLSConfig == nil || o.DB != 3 || o.Username != "user" || addr != "rediss://redis.example:6380/3" {
		t.Fatalf("rediss URL: %+v %q %v", o, addr, err)
	}
	if _, _, err := ParseURL("redis://h:1/0?tls_ca=/x.pem"); err == nil {
		t.Fatal("tls_ca accepted without TLS")
	}
	dir := t.TempDir()
	if _, _, err := ParseURL("rediss://h:1/0?tls_ca=" + dir + "/missing.pem"); err == nil {
		t.Fatal("a missing tls_ca file accepted")
	}
}

// TestSweep reclaims the index entries of expired keys, and only those.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, redistest.Options{})
	s := openAt(t, srv.URL(), "w:")
	kv := s.KV("T")
	if err := kv.Put(ctx, "short", []byte("x"), time.Now().Add(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, "long", []byte("x"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	storetest.WaitFor(t, "the short key to expire", func() bool {
		n, _ := s.c.Exists(ctx, s.keys.kvPrefix("T")+"short").Result()
		return n == 0
	})
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if m, _ := s.c.ZRange(ctx, s.keys.kvIndex("T"), 0, -1).Result(); len(m) != 1 || m[0] != "long" {
		t.Fatalf("index after sweep: %v", m)
	}
}
