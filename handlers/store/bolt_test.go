package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/handlers/chain"
)

func open(t *testing.T, dir string) *Bolt {
	t.Helper()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestInstancesPersistAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	var changes []Change
	var mu sync.Mutex
	unsub := s.Subscribe(func(c Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() })

	created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	a := Instance{ID: "sbx-a", Class: "A", Created: created, TokenHash: [32]byte{1, 2, 3}}
	b := Instance{ID: "sbx-b", Class: "B", Created: created, TokenHash: [32]byte{9}}
	for _, in := range []Instance{a, b} {
		if err := s.CreateInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateInstance(ctx, a); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate create: %v, want ErrExists", err)
	}
	ov := chain.Overrides{
		AllowedHosts: []string{},
		DeniedHosts:  []string{"Evil.com", "*.bad.org"},
		Outbound:     &chain.Choice{Method: "allowHosts", Params: json.RawMessage(`{"allowedHostnames":["github.com"]}`)},
		ByHost:       []chain.HostChoice{{Host: "z.com", Choice: chain.Choice{Method: "h"}}, {Host: "*.a.com", Choice: chain.Choice{Method: "g", Params: json.RawMessage(`null`)}}},
	}
	if err := s.PutOverrides(ctx, "sbx-a", ov); err != nil {
		t.Fatal(err)
	}
	if err := s.PutOverrides(ctx, "sbx-missing", ov); !errors.Is(err, ErrNotFound) {
		t.Fatalf("overrides of a missing instance: %v", err)
	}
	if err := s.DeleteInstance(ctx, "sbx-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteInstance(ctx, "sbx-b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	unsub()
	if err := s.CreateInstance(ctx, b); err != nil { // recreate: no stale overrides
		t.Fatal(err)
	}
	mu.Lock()
	wantKinds := []ChangeKind{InstanceCreated, InstanceCreated, OverridesChanged, InstanceDeleted}
	var gotKinds []ChangeKind
	for _, c := range changes {
		gotKinds = append(gotKinds, c.Kind)
	}
	mu.Unlock()
	if !slices.Equal(gotKinds, wantKinds) {
		t.Fatalf("changes %v, want %v (and nothing after unsubscribe)", gotKinds, wantKinds)
	}
	s.Close()

	s2 := open(t, dir)
	got, err := s2.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "sbx-a" || got[1].ID != "sbx-b" {
		t.Fatalf("instances after reopen: %+v", got)
	}
	ga := got[0]
	if ga.Class != "A" || ga.TokenHash != a.TokenHash || !ga.Created.Equal(created) {
		t.Errorf("instance a after reopen: %+v", ga)
	}
	wantJSON, _ := json.Marshal(ov)
	gotJSON, _ := json.Marshal(ga.Overrides)
	if string(wantJSON) != string(gotJSON) {
		t.Errorf("overrides after reopen:\n got %s\nwant %s", gotJSON, wantJSON)
	}
	if ga.Overrides.AllowedHosts == nil {
		t.Error("an empty allow list came back unset")
	}
	if !got[1].Overrides.IsZero() {
		t.Errorf("recreated instance kept old overrides: %+v", got[1].Overrides)
	}
}

func TestStoreFileHasNoToken(t *testing.T) {
	// The store takes only hashes; make sure nothing else lands on disk by
	// checking a token-shaped value we never gave it is absent and the hash is.
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	h := [32]byte{0xde, 0xad, 0xbe, 0xef}
	if err := s.CreateInstance(ctx, Instance{ID: "x", Class: "C", TokenHash: h}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, err := os.ReadFile(dir + "/" + File)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "deadbeef") {
		t.Fatal("token hash not found on disk")
	}
}

func TestKV(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	kv := s.KV("CACHE")
	other := s.KV("OTHER")

	if _, ok, err := kv.Get(ctx, "missing"); ok || err != nil {
		t.Fatalf("Get on an empty binding: %v %v", ok, err)
	}
	if err := kv.Put(ctx, "a/1", []byte("one"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, "a/2", []byte("two"), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, "a/3", []byte{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, "b/1", []byte("b"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, "", []byte("x"), time.Time{}); err == nil {
		t.Fatal("empty key accepted")
	}
	if err := kv.Put(ctx, strings.Repeat("k", 513), []byte("x"), time.Time{}); err == nil {
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
	// pagination
	keys, next, _ = kv.List(ctx, "", "", 2)
	if !slices.Equal(keys, []string{"a/1", "a/2"}) || next != "a/2" {
		t.Fatalf("page 1 = %v %q", keys, next)
	}
	keys, next, _ = kv.List(ctx, "", next, 2)
	if !slices.Equal(keys, []string{"a/3", "b/1"}) || next != "" {
		t.Fatalf("page 2 = %v %q", keys, next)
	}
	// expiry
	now = now.Add(time.Minute)
	if _, ok, _ := kv.Get(ctx, "a/2"); ok {
		t.Fatal("expired key still readable")
	}
	keys, _, _ = kv.List(ctx, "a/", "", 0)
	if !slices.Equal(keys, []string{"a/1", "a/3"}) {
		t.Fatalf("List after expiry = %v", keys)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v", n, err)
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
	s.Close()

	s2 := open(t, dir)
	s2.now = func() time.Time { return now }
	kv2 := s2.KV("CACHE")
	keys, _, _ = kv2.List(ctx, "", "", 0)
	if !slices.Equal(keys, []string{"a/3", "b/1"}) {
		t.Fatalf("keys after reopen = %v", keys)
	}
	if v, ok, _ := kv2.Get(ctx, "b/1"); !ok || string(v) != "b" {
		t.Fatalf("value after reopen = %q %v", v, ok)
	}
	// a key that expires later survives the reopen with its expiry
	if err := kv2.Put(ctx, "ttl", []byte("t"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	s3 := open(t, dir)
	s3.now = func() time.Time { return now.Add(2 * time.Hour) }
	if _, ok, _ := s3.KV("CACHE").Get(ctx, "ttl"); ok {
		t.Fatal("expiry lost across reopen")
	}
}

func TestCanceledContext(t *testing.T) {
	s := open(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.CreateInstance(ctx, Instance{ID: "x"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if err := s.KV("K").Put(ctx, "k", nil, time.Time{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	if _, err := OpenBolt(dir); err == nil {
		t.Fatal("a second open of a locked store succeeded")
	}
}

const crashEnv = "OUTBOUND_STORE_CRASH_DIR"

// TestCrashChild is the writer of TestCrash; it does nothing on its own.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by TestCrash")
	}
	ctx := context.Background()
	s, err := OpenBolt(dir)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	kv := s.KV("DATA")
	for i := 0; ; i++ {
		id := fmt.Sprintf("sbx-%06d", i)
		if err := s.CreateInstance(ctx, Instance{ID: id, Class: "C", TokenHash: [32]byte{byte(i)}}); err != nil {
			fmt.Println("create:", err)
			os.Exit(2)
		}
		fmt.Printf("instance %s\n", id)
		o := chain.Overrides{DeniedHosts: []string{fmt.Sprintf("h%d.com", i)}}
		if err := s.PutOverrides(ctx, id, o); err != nil {
			fmt.Println("overrides:", err)
			os.Exit(2)
		}
		fmt.Printf("overrides %s\n", id)
		if err := kv.Put(ctx, id, []byte(id), time.Time{}); err != nil {
			fmt.Println("kv:", err)
			os.Exit(2)
		}
		fmt.Printf("kv %s\n", id)
	}
}

// TestCrash kills a writer with SIGKILL mid-stream and checks that the
// store opens and holds every write the writer saw acknowledged.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string][]string{}
	sc := bufio.NewScanner(out)
	n := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			t.Logf("child: %s", sc.Text())
			continue
		}
		acked[f[0]] = append(acked[f[0]], f[1])
		n++
		if n == 150 { // some writes in, then kill mid-stream
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v (%d acks)", err, n)
	}

	s := open(t, dir)
	ctx := context.Background()
	ins, err := s.Instances(ctx)
	if err != nil {
		t.Fatalf("reading a crashed store: %v", err)
	}
	have := map[string]Instance{}
	for _, in := range ins {
		have[in.ID] = in
	}
	for _, id := range acked["instance"] {
		if _, ok := have[id]; !ok {
			t.Errorf("acknowledged instance %s lost", id)
		}
	}
	for i, id := range acked["overrides"] {
		if d := have[id].Overrides.DeniedHosts; len(d) != 1 || d[0] != fmt.Sprintf("h%d.com", i) {
			t.Errorf("acknowledged overrides of %s lost: %v", id, d)
		}
	}
	for _, id := range acked["kv"] {
		if v, ok, err := s.KV("DATA").Get(ctx, id); !ok || string(v) != id || err != nil {
			t.Errorf("acknowledged KV %s lost: %q %v %v", id, v, ok, err)
		}
	}
	if len(acked["instance"]) < 40 {
		t.Fatalf("only %d instances acknowledged; the test did not exercise much", len(acked["instance"]))
	}
	// the store stays writable after the crash
	if err := s.CreateInstance(ctx, Instance{ID: "after-crash", Class: "C"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes acknowledged before SIGKILL, %d instances on disk", n, len(ins))
}
