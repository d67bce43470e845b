package bolt

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/internal/store/storetest"
)

func open(t *testing.T, dir string) *Bolt {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		Fresh: func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
			dir := t.TempDir()
			s := open(t, dir)
			return s, func(t *testing.T) store.Store {
				s.Close()
				return open(t, dir)
			}
		},
	})
}

func TestStoreFileHasNoToken(t *testing.T) {
	// The store takes only hashes; make sure nothing else lands on disk by
	// checking a token-shaped value we never gave it is absent and the hash is.
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	h := [32]byte{0xde, 0xad, 0xbe, 0xef}
	if err := s.CreateInstance(ctx, store.Instance{ID: "x", Class: "C", TokenHash: h}); err != nil {
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

// TestSweep runs on a fake clock: reads hide an expired entry at once, and
// Sweep reclaims it.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	kv := s.KV("CACHE")
	if err := kv.Put(ctx, "a", []byte("1"), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, "b", []byte("2"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if _, ok, _ := kv.Get(ctx, "a"); ok {
		t.Fatal("expired key still readable")
	}
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	keys, _, _ := kv.List(ctx, "", "", 0)
	if !slices.Equal(keys, []string{"b"}) {
		t.Fatalf("keys after sweep = %v", keys)
	}
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	_, err := Open(dir)
	if err == nil {
		t.Fatal("a second open of a locked store succeeded")
	}
	want := fmt.Sprintf("state dir %s is in use by another outbound (pid %d)", dir, os.Getpid())
	if !errors.Is(err, ErrInUse) || err.Error() != want {
		t.Fatalf("second open: %v, want %q wrapping ErrInUse", err, want)
	}
}

// The pid file goes with the store, so a stale one never names a process
// that no longer holds it.
func TestOwnerFileLivesWithTheStore(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, File)
	if pid, ok := readOwner(db); !ok || pid != os.Getpid() {
		t.Fatalf("%s%s names pid %d (%v), want %d", File, OwnerSuffix, pid, ok, os.Getpid())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(db + OwnerSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s%s after Close: %v", File, OwnerSuffix, err)
	}
	// A store named by its file (bolt:PATH) is held the same way.
	f := filepath.Join(t.TempDir(), "fleet.db")
	s, err = OpenFile(f)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := fmt.Sprintf("store %s is in use by another outbound (pid %d)", f, os.Getpid())
	if _, err := OpenFile(f); !errors.Is(err, ErrInUse) || err.Error() != want {
		t.Fatalf("second OpenFile: %v, want %q", err, want)
	}
}

func TestOpenRefusesAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(f); err == nil || err.Error() != "state dir "+f+" is not a directory" {
		t.Fatalf("Open(file) = %v", err)
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
	s, err := Open(dir)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	kv := s.KV("DATA")
	for i := 0; ; i++ {
		id := fmt.Sprintf("sbx-%06d", i)
		if err := s.CreateInstance(ctx, store.Instance{ID: id, Class: "C", TokenHash: [32]byte{byte(i)}}); err != nil {
			fmt.Println("create:", err)
			os.Exit(2)
		}
		fmt.Printf("instance %s\n", id)
		o := fmt.Sprintf(`{"deniedHosts":["h%d.com"]}`, i)
		if _, err := s.UpdateOverrides(ctx, id, func(json.RawMessage) (json.RawMessage, error) { return json.RawMessage(o), nil }); err != nil {
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
	have := map[string]store.Instance{}
	for _, inst := range ins {
		have[inst.ID] = inst
	}
	for _, id := range acked["instance"] {
		if _, ok := have[id]; !ok {
			t.Errorf("acknowledged instance %s lost", id)
		}
	}
	for i, id := range acked["overrides"] {
		if d := string(have[id].Overrides); d != fmt.Sprintf(`{"deniedHosts":["h%d.com"]}`, i) {
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
	if err := s.CreateInstance(ctx, store.Instance{ID: "after-crash", Class: "C"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes acknowledged before SIGKILL, %d instances on disk", n, len(ins))
}
