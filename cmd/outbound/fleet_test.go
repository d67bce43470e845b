package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/outbound-dev/outbound/internal/platform"
	"github.com/outbound-dev/outbound/internal/store/redis/redistest"
)

func fleetScriptPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "fleet", "policy.js")
}

// freeAddr is a loopback address for a replica that must come back on the
// same address after a restart.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := platform.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func replicaArgs(storeURL string, extra ...string) []string {
	return append([]string{"--script", fleetScriptPath(), "--store", storeURL, "--kv", "DATA",
		"--var", "API_KEY=not-a-real-key", "--admin", "127.0.0.1:0"}, extra...)
}

// proxyGet sends a plain GET through proxyURL and returns status and body.
func proxyGet(t *testing.T, proxyURL, target string) (int, string) {
	t.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(target)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestFleetHomeKilledAndRestarted runs three `outbound serve` processes on
// one Redis. The home of an instance is killed with SIGKILL in the middle
// of a stream of writes made through it, and restarted with the same
// --advertise: it is the home again, and the instance keeps its id, token,
// class, overrides (every acknowledged one) and KV, with a new CA that the
// other replicas hand out too.
func TestFleetHomeKilledAndRestarted(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, redistest.Options{})
	homeAddr := freeAddr(t)
	a := serveProc(t, replicaArgs(rs.URL(), "--listen", homeAddr, "--advertise", homeAddr)...)
	b := serveProc(t, replicaArgs(rs.URL(), "--listen", "127.0.0.1:0")...)
	c := serveProc(t, replicaArgs(rs.URL(), "--listen", "127.0.0.1:0")...)
	if a.adv != homeAddr || b.adv != b.proxy {
		t.Fatalf("advertised addresses: A %s (want %s), B %s (want its listener %s)", a.adv, homeAddr, b.adv, b.proxy)
	}

	created, err := a.admin.Create(ctx, "sbx-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := url.Parse(created.ProxyURL); u.Host != homeAddr {
		t.Fatalf("proxy_url %s does not name the home %s", created.ProxyURL, homeAddr)
	}
	// A control call on B; a request through the home sees it.
	if _, err := b.admin.Call(ctx, "sbx-1", "setOutboundHandler", []json.RawMessage{json.RawMessage(`"hello"`), json.RawMessage(`{"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's call to reach the home", func() bool {
		_, got := proxyGet(t, created.ProxyURL, "http://x.test/")
		return got == `hello {"v":1} keyed from sbx-1`
	})
	// The instance's traffic on C: 421 naming the home.
	u, _ := url.Parse(created.ProxyURL)
	u.Host = c.proxy
	if code, got := proxyGet(t, u.String(), "http://x.test/"); code != 421 || !strings.Contains(got, homeAddr) {
		t.Fatalf("through C: %d %q, want 421 naming %s", code, got, homeAddr)
	}

	// Writes through the home until it is killed: only acknowledged ones
	// count.
	var mu sync.Mutex
	var hosts, keys []string
	stop := make(chan struct{})
	done := writeUntilStopped(stop, func(i int) error {
		h := fmt.Sprintf("h%d.example.com", i)
		arg, _ := json.Marshal(h)
		if _, err := a.admin.Call(ctx, "sbx-1", "allowHost", []json.RawMessage{arg}); err != nil {
			return err
		}
		mu.Lock()
		hosts = append(hosts, h)
		mu.Unlock()
		k := fmt.Sprintf("k%d", i)
		if err := a.admin.KVPut(ctx, "DATA", k, []byte("v"+k)); err != nil {
			return err
		}
		mu.Lock()
		keys = append(keys, k)
		mu.Unlock()
		return nil
	})
	waitFor(t, "some writes to be acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(keys) >= 20
	})
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	close(stop)
	<-done

	// While the home is down, the others still list it, with its home.
	var view struct {
		Class        string
		Home         string
		AllowedHosts []string
	}
	raw, err := b.admin.Get(ctx, "sbx-1")
	if err != nil || json.Unmarshal(raw, &view) != nil || view.Home != homeAddr {
		t.Fatalf("B's view while the home is down: %s %v", raw, err)
	}

	a2 := serveProc(t, replicaArgs(rs.URL(), "--listen", homeAddr, "--advertise", homeAddr)...)
	raw, err = a2.admin.Get(ctx, "sbx-1")
	if err != nil {
		t.Fatalf("the instance is gone after the home's restart: %v", err)
	}
	if err := json.Unmarshal(raw, &view); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if view.Class != created.Class || view.Home != homeAddr {
		t.Fatalf("after the restart: class %q home %q", view.Class, view.Home)
	}
	for _, h := range hosts {
		if !slices.Contains(view.AllowedHosts, h) {
			t.Fatalf("acknowledged allowHost(%s) lost (%d acknowledged)", h, len(hosts))
		}
	}
	for _, k := range keys {
		if v, err := b.admin.KVGet(ctx, "DATA", k); err != nil || string(v) != "v"+k {
			t.Fatalf("acknowledged KV put %s lost: %q %v", k, v, err)
		}
	}
	// Same token, same overrides, through the restarted home: the allow
	// list holds only the acknowledged hosts, and the handler answers.
	if code, got := proxyGet(t, created.ProxyURL, "http://"+hosts[0]+"/"); code != 200 || got != `hello {"v":1} keyed from sbx-1` {
		t.Fatalf("the old proxy_url after the restart, to an allowed host: %d %q", code, got)
	}
	if code, _ := proxyGet(t, created.ProxyURL, "http://x.test/"); code != 520 {
		t.Fatalf("the old proxy_url after the restart, to a host not allowed: %d, want 520", code)
	}
	// A new CA, and every replica hands out the new one.
	pem, err := a2.admin.CAPEM(ctx, "sbx-1")
	if err != nil || string(pem) == created.CAPEM {
		t.Fatalf("ca.pem after the restart: new %v, %v", string(pem) != created.CAPEM, err)
	}
	for name, r := range map[string]served{"B": b, "C": c} {
		waitFor(t, name+" to hand out the new certificate", func() bool {
			got, err := r.admin.CAPEM(ctx, "sbx-1")
			return err == nil && string(got) == string(pem)
		})
	}
	// Attaching through another replica points the sandbox at the home.
	token, _ := u.User.Password()
	out, stderr, code := outbound(t, nil, "env", "--admin", c.adminAddress, "--id", "sbx-1", "--token", token, "--dir", t.TempDir())
	if code != 0 || !strings.Contains(out, "@"+homeAddr) {
		t.Fatalf("outbound env through C: exit %d, stdout %q, stderr %q; want a proxy URL naming the home %s", code, out, stderr, homeAddr)
	}
	t.Logf("%d allowHost and %d KV writes acknowledged before SIGKILL, all there after the restart", len(hosts), len(keys))
}

// TestFleetAdvertiseTwice: a second live replica with the same --advertise
// is refused, since both would serve the same instances with different CAs.
func TestFleetAdvertiseTwice(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	addr := freeAddr(t)
	serveProc(t, replicaArgs(rs.URL(), "--listen", "127.0.0.1:0", "--advertise", addr)...)
	_, stderr, code := outbound(t, nil, append([]string{"serve"}, replicaArgs(rs.URL(), "--listen", "127.0.0.1:0", "--advertise", addr)...)...)
	if code != 1 || !strings.Contains(stderr, "another live replica serves as home "+addr) {
		t.Fatalf("a second replica with one --advertise: exit %d\n%s", code, stderr)
	}
}

// TestStoreFlagErrors: a bad --store or --advertise is one line, exit 2
// (form) or 1 (unreachable), and never shows a password.
func TestStoreFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--store", "mysql://x"},
		{"--store", "redis://:hunter2@[::1"},
		{"--store", "redis://:hunter2@127.0.0.1:1/notadb"},
	} {
		_, stderr, code := outbound(t, nil, append([]string{"serve", "--script", "x.js"}, args...)...)
		if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || strings.Contains(stderr, "hunter2") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	_, stderr, code := outbound(t, nil, "serve", "--script", fleetScriptPath(), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--store", "bolt:"+filepath.Join(t.TempDir(), "o.db"), "--advertise", "no-port")
	if code != 2 || !strings.Contains(stderr, "bad --advertise") {
		t.Errorf("bad --advertise: exit %d, stderr %q", code, stderr)
	}
}
