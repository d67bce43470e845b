package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
	"github.com/outbound-dev/outbound/internal/store/redis/redistest"
)

// echoOn echoes each connection on 127.0.0.1 and returns the port.
func echoOn(t *testing.T) int {
	addr := apptest.ServeTCP(t, func(c net.Conn) { io.Copy(c, c) })
	return int(netip.MustParseAddrPort(addr).Port())
}

// tunnelScript writes testdata/server/tunnels.js with the given class
// fields to path.
func tunnelScript(t *testing.T, path, denied string, intercept bool) {
	t.Helper()
	b, err := os.ReadFile("../../testdata/server/tunnels.js")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "__DENIED__", denied)
	s = strings.ReplaceAll(s, "__INTERCEPT__", strconv.FormatBool(intercept))
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// openTunnel is a raw CONNECT through the proxy that echoes.
type openTunnel struct {
	name string
	c    net.Conn
	br   *bufio.Reader
}

func dialTunnel(t *testing.T, srv *apptest.Server, target, id, token string) *openTunnel {
	t.Helper()
	code, conn := connectRaw(t, srv.ProxyAddr().String(), target, basicAuth(id, token))
	if code != 200 {
		t.Fatalf("CONNECT %s as %s: %d", target, id, code)
	}
	tn := &openTunnel{name: id + "→" + target, c: conn, br: bufio.NewReader(conn)}
	if !tn.echoes() {
		t.Fatalf("tunnel %s does not echo", tn.name)
	}
	return tn
}

func (tn *openTunnel) echoes() bool {
	tn.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(tn.c, "ping"); err != nil {
		return false
	}
	buf := make([]byte, 4)
	_, err := io.ReadFull(tn.br, buf)
	return err == nil && string(buf) == "ping"
}

// cut reports whether the proxy closed the tunnel (waiting up to a minute).
func (tn *openTunnel) cut() bool {
	tn.c.SetDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, tn.br)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func expectOpen(t *testing.T, tns ...*openTunnel) {
	t.Helper()
	for _, tn := range tns {
		if !tn.echoes() {
			t.Errorf("tunnel %s was closed; the policy still allows it", tn.name)
		}
	}
}

func expectCut(t *testing.T, tns ...*openTunnel) {
	t.Helper()
	for _, tn := range tns {
		if !tn.cut() {
			t.Errorf("tunnel %s stayed open; the policy now blocks it", tn.name)
		}
	}
}

func call1(t *testing.T, srv *apptest.Server, id, method string, args ...any) {
	t.Helper()
	var raw []json.RawMessage
	for _, a := range args {
		b, _ := json.Marshal(a)
		raw = append(raw, b)
	}
	if _, err := srv.Admin.Call(context.Background(), id, method, raw); err != nil {
		t.Fatalf("%s(%v) on %s: %v", method, args, id, err)
	}
}

// TestPolicyChangesReachOpenTunnels: opaque tunnels (443 without
// interception, and raw ports) are decided again when their instance's
// policy changes, by a runtime method or a reloaded script; the ones now
// blocked (or now to be intercepted) are closed, logged and counted, and
// the others stay open.
func TestPolicyChangesReachOpenTunnels(t *testing.T) {
	port := strconv.Itoa(echoOn(t))
	script := filepath.Join(t.TempDir(), "tunnels.js")
	tunnelScript(t, script, `"never.test"`, false)
	var maps []string
	for _, h := range []string{"a.test", "b.test"} {
		maps = append(maps, h+":443:127.0.0.1:"+port, h+":2222:127.0.0.1:"+port)
	}
	srv := apptest.Start(t, app.Config{Script: script, ConnectTo: maps})
	rtID, rtTok := credsOf(t, srv.Create(t, "rt", "Tunnels"))
	rlID, rlTok := credsOf(t, srv.Create(t, "rl", "Tunnels"))

	// Runtime methods on rt.
	a443 := dialTunnel(t, srv, "a.test:443", rtID, rtTok)
	a2222 := dialTunnel(t, srv, "a.test:2222", rtID, rtTok)
	b443 := dialTunnel(t, srv, "b.test:443", rtID, rtTok)
	other := dialTunnel(t, srv, "a.test:443", rlID, rlTok) // another instance

	call1(t, srv, "rt", "denyHost", "a.test")
	expectCut(t, a443, a2222)
	expectOpen(t, b443, other)

	call1(t, srv, "rt", "removeDeniedHost", "a.test")
	a443 = dialTunnel(t, srv, "a.test:443", rtID, rtTok)
	call1(t, srv, "rt", "setAllowedHosts", []string{"b.test"})
	expectCut(t, a443)
	expectOpen(t, b443, other)
	if n := series(t, srv, `outbound_tunnels_cut_total{reason="blocked"}`); n != 3 {
		t.Errorf("outbound_tunnels_cut_total{reason=blocked} = %v after runtime methods, want 3", n)
	}

	// A reloaded script: rl has no overrides, so the class decides.
	b443rl := dialTunnel(t, srv, "b.test:443", rlID, rlTok)
	a2222rl := dialTunnel(t, srv, "a.test:2222", rlID, rlTok)
	tunnelScript(t, script, `"b.test"`, false)
	if err := srv.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	expectCut(t, b443rl)
	expectOpen(t, other, a2222rl)

	// A script that now intercepts 443: an opaque tunnel there would
	// bypass the handlers, so it is closed too; the raw port stays.
	tunnelScript(t, script, `"b.test"`, true)
	if err := srv.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	expectCut(t, other, b443)
	expectOpen(t, a2222rl)
	if n := series(t, srv, `outbound_tunnels_cut_total{reason="intercepted"}`); n != 2 {
		t.Errorf("outbound_tunnels_cut_total{reason=intercepted} = %v, want 2", n)
	}
	logs := srv.Log.String()
	if c := strings.Count(logs, "tunnel closed: the instance's policy changed"); c != 6 {
		t.Errorf("%d log lines of closed tunnels, want 6:\n%s", c, logs)
	}
}

// TestRecreatedInstanceInheritsNothing: a new instance with the id of a
// deleted one sees none of its trace or overrides, and none of its tunnels
// stay open.
func TestRecreatedInstanceInheritsNothing(t *testing.T) {
	port := strconv.Itoa(echoOn(t))
	script := filepath.Join(t.TempDir(), "tunnels.js")
	tunnelScript(t, script, `"never.test"`, false)
	srv := apptest.Start(t, app.Config{Script: script, ConnectTo: []string{"a.test:443:127.0.0.1:" + port}})
	ctx := context.Background()

	id, tok := credsOf(t, srv.Create(t, "sbx", "Tunnels"))
	old := dialTunnel(t, srv, "a.test:443", id, tok)
	call1(t, srv, "sbx", "denyHost", "evil.test")
	if code, _ := connectRaw(t, srv.ProxyAddr().String(), "evil.test:443", basicAuth(id, tok)); code != 520 {
		t.Fatalf("the denied host: %d, want 520", code)
	}
	if har, _ := srv.Admin.HAR(ctx, "sbx"); !strings.Contains(string(har), "evil.test") {
		t.Fatalf("the first instance's trace does not hold its traffic: %s", har)
	}

	if err := srv.Admin.Delete(ctx, "sbx"); err != nil {
		t.Fatal(err)
	}
	expectCut(t, old)
	id2, tok2 := credsOf(t, srv.Create(t, "sbx", "Tunnels"))
	if tok2 == tok {
		t.Fatal("the new instance got the old token")
	}
	if code, _ := connectRaw(t, srv.ProxyAddr().String(), "a.test:443", basicAuth(id, tok)); code != 407 {
		t.Errorf("the old token: %d, want 407", code)
	}
	har, err := srv.Admin.HAR(ctx, "sbx")
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Log struct{ Entries []json.RawMessage }
	}
	if err := json.Unmarshal(har, &h); err != nil || len(h.Log.Entries) != 0 {
		t.Errorf("the new instance's trace holds %d entries (%v): %s", len(h.Log.Entries), err, har)
	}
	raw, err := srv.Admin.Get(ctx, "sbx")
	if err != nil {
		t.Fatal(err)
	}
	var view struct{ DeniedHosts []string }
	json.Unmarshal(raw, &view)
	if len(view.DeniedHosts) != 1 || view.DeniedHosts[0] != "never.test" {
		t.Errorf("the new instance's denied hosts %q, want the class's [never.test]", view.DeniedHosts)
	}
	if code, _ := connectRaw(t, srv.ProxyAddr().String(), "evil.test:443", basicAuth(id2, tok2)); code == 520 {
		t.Errorf("the new instance inherited the old one's denyHost")
	}
}

// TestFleetPolicyChangeReachesTunnels: a runtime method called on another
// replica of a fleet reaches the home's open tunnels once the home applies
// it from the store.
func TestFleetPolicyChangeReachesTunnels(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	port := strconv.Itoa(echoOn(t))
	script := filepath.Join(t.TempDir(), "tunnels.js")
	tunnelScript(t, script, `"never.test"`, false)
	replica := func() *apptest.Server {
		return apptest.Start(t, app.Config{Script: script, Store: rs.URL(),
			ConnectTo: []string{"a.test:443:127.0.0.1:" + port, "b.test:443:127.0.0.1:" + port}})
	}
	home, other := replica(), replica()
	id, tok := credsOf(t, home.Create(t, "sbx", "Tunnels"))
	a443 := dialTunnel(t, home, "a.test:443", id, tok)
	b443 := dialTunnel(t, home, "b.test:443", id, tok)

	call1(t, other, "sbx", "denyHost", "a.test")
	expectCut(t, a443)
	expectOpen(t, b443)
	if n := series(t, home, `outbound_tunnels_cut_total{reason="blocked"}`); n != 1 {
		t.Errorf("the home counted %v cut tunnels, want 1", n)
	}
}
