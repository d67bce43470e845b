package app_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
	"github.com/outbound-dev/outbound/internal/store/redis/redistest"
	"github.com/outbound-dev/outbound/proxy/control"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

// Fleet tests: replicas in this process sharing a real redis-server. The
// separate-process cases (SIGKILL and restart) are in cmd/outbound.

const (
	fleetScript = "../../testdata/fleet/policy.js"
	fleetSecret = "sk-fleet-env-secret-value-0123456789"
)

func startReplica(t *testing.T, storeURL string) *apptest.Server {
	t.Helper()
	return apptest.Start(t, app.Config{
		Script: fleetScript, Store: storeURL, KV: []string{"DATA"},
		Vars: map[string]string{"API_KEY": fleetSecret},
	})
}

type fleetView struct {
	ID              string
	Home            string
	OutboundHandler *struct {
		Method string
		Params json.RawMessage
	}
	DeniedHosts []string
}

func views(t *testing.T, srv *apptest.Server) map[string]fleetView {
	t.Helper()
	raw, err := srv.Admin.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var l []fleetView
	if err := json.Unmarshal(raw, &l); err != nil {
		t.Fatal(err)
	}
	out := map[string]fleetView{}
	for _, v := range l {
		out[v.ID] = v
	}
	return out
}

type fleetStatus struct {
	Instances      int
	LocalInstances int
	Proxy          struct{ Advertise string }
	Store          struct {
		Backend string
		Up      bool
		Error   *string
		Resyncs int
	}
}

func fleetStatusOf(t *testing.T, srv *apptest.Server) fleetStatus {
	t.Helper()
	raw, err := srv.Admin.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var s fleetStatus
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// via is a client for instance c that sends its traffic to another
// replica's proxy listener, trusting c's CA.
func via(t *testing.T, c control.Created, srv *apptest.Server) *http.Client {
	t.Helper()
	u, _ := url.Parse(c.ProxyURL)
	u.Host = srv.ProxyAddr().String()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(c.CAPEM))
	return apptest.ClientWithRoots(t, u.String(), pool)
}

func apiStatus(err error) int {
	var e *client.APIError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// TestFleetThreeReplicas: an instance created on A is listed by B and C
// with its home; its CA certificate is answered by C; a control call on B
// takes effect on A; KV written on C is read by a handler on A; its
// traffic on B gets 421 naming A; a delete on C ends it on A. Redis holds
// no token, env secret or private key.
func TestFleetThreeReplicas(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, redistest.Options{})
	// Everything published while the fleet works, to check for secrets.
	rc := goredis.NewClient(&goredis.Options{Addr: rs.Addr()})
	defer rc.Close()
	feed := rc.Subscribe(ctx, "outbound:changes")
	defer feed.Close()
	if _, err := feed.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	var fedMu sync.Mutex
	var fed []string
	go func() {
		for m := range feed.Channel() {
			fedMu.Lock()
			fed = append(fed, m.Payload)
			fedMu.Unlock()
		}
	}()

	a := startReplica(t, rs.URL())
	b := startReplica(t, rs.URL())
	c := startReplica(t, rs.URL())
	created := a.Create(t, "sbx-a", "")
	if u, _ := url.Parse(created.ProxyURL); u.Host != a.Advertise() || a.Advertise() != a.ProxyAddr().String() {
		t.Fatalf("proxy_url %s does not name A's advertised address %s", created.ProxyURL, a.Advertise())
	}
	id, token := credsOf(t, created)

	for name, srv := range map[string]*apptest.Server{"B": b, "C": c} {
		waitUntil(t, name+" to list sbx-a", func() bool { return views(t, srv)["sbx-a"].Home == a.Advertise() })
		if st := fleetStatusOf(t, srv); st.Instances != 1 || st.LocalInstances != 0 || st.Store.Backend != "redis" || !st.Store.Up {
			t.Fatalf("%s status: %+v", name, st)
		}
	}
	if st := fleetStatusOf(t, a); st.LocalInstances != 1 || st.Proxy.Advertise != a.Advertise() {
		t.Fatalf("A status: %+v", st)
	}
	pem, err := c.Admin.CAPEM(ctx, "sbx-a")
	if err != nil || string(pem) != created.CAPEM {
		t.Fatalf("ca.pem on C: %v; same as at creation: %v", err, string(pem) == created.CAPEM)
	}

	// A control call on B takes effect on A.
	onA := apptest.Client(t, created)
	if code, _ := call(t, onA, "GET", "http://x.test/", nil); code != 520 {
		t.Fatalf("before any handler: %d, want 520", code)
	}
	raw, err := b.Admin.Call(ctx, "sbx-a", "setOutboundHandler", []json.RawMessage{json.RawMessage(`"hello"`), json.RawMessage(`{"n":1}`)})
	if err != nil || !strings.Contains(string(raw), `"home":"`+a.Advertise()+`"`) {
		t.Fatalf("setOutboundHandler on B: %s %v", raw, err)
	}
	waitUntil(t, "B's call to take effect on A", func() bool {
		_, got := call(t, onA, "GET", "http://x.test/", nil)
		return got == `hello {"n":1} keyed from sbx-a`
	})
	waitUntil(t, "C to see B's call", func() bool {
		h := views(t, c)["sbx-a"].OutboundHandler
		return h != nil && h.Method == "hello"
	})

	// KV written on C is read by a handler on A.
	if err := c.Admin.KVPut(ctx, "DATA", "greeting", []byte("written on C")); err != nil {
		t.Fatal(err)
	}
	if code, got := call(t, onA, "GET", "http://kv.test/greeting", nil); code != 200 || got != "written on C" {
		t.Fatalf("handler on A read %d %q", code, got)
	}

	// Its traffic on B: 421 naming A, for HTTP and CONNECT alike, and no
	// TLS from B's side at all.
	code, got := call(t, via(t, created, b), "GET", "http://x.test/", nil)
	if code != 421 || !strings.Contains(got, a.Advertise()) {
		t.Fatalf("plain request on B: %d %q, want 421 naming %s", code, got, a.Advertise())
	}
	if code, conn := connectRaw(t, b.ProxyAddr().String(), "example.com:443", basicAuth(id, token)); code != 421 {
		t.Fatalf("CONNECT on B: %d, want 421", code)
	} else if conn != nil {
		conn.Close()
	}
	if _, err := via(t, created, b).Get("https://example.com/"); err == nil || !strings.Contains(err.Error(), "Misdirected") {
		t.Fatalf("HTTPS through B: %v, want the 421 of the CONNECT", err)
	}
	if code, _ := connectRaw(t, b.ProxyAddr().String(), "example.com:443", basicAuth(id, token+"x")); code != 407 {
		t.Fatalf("a wrong token on B: %d, want 407 (no hint of the home)", code)
	}
	if _, err := b.Admin.HAR(ctx, "sbx-a"); apiStatus(err) != 421 || !strings.Contains(err.Error(), a.Advertise()) {
		t.Fatalf("HAR on B: %v, want 421 naming A", err)
	}

	checkRedisHasNoSecrets(t, rc, token, created.CAPEM)
	fedMu.Lock()
	for _, m := range fed {
		if strings.Contains(m, token) || strings.Contains(m, fleetSecret) {
			t.Fatalf("a change message holds a secret: %s", m)
		}
	}
	fedMu.Unlock()

	// A delete on C ends it on A.
	if err := c.Admin.Delete(ctx, "sbx-a"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "A to drop the deleted instance", func() bool {
		code, _ := call(t, onA, "GET", "http://x.test/", nil)
		return code == 407
	})
	if _, ok := views(t, b)["sbx-a"]; ok {
		waitUntil(t, "B to drop it", func() bool { _, ok := views(t, b)["sbx-a"]; return !ok })
	}
	if n := metric(t, a.AdminAddr().String(), "outbound_store_remote_changes_total"); n == 0 {
		t.Fatalf("A counted no remote change")
	}
}

// checkRedisHasNoSecrets reads every key in Redis: the token is there only
// as its SHA-256, and no env value or private key is anywhere.
func checkRedisHasNoSecrets(t *testing.T, rc *goredis.Client, token, caPEM string) {
	t.Helper()
	ctx := context.Background()
	var all strings.Builder
	iter := rc.Scan(ctx, 0, "*", 100).Iterator()
	n := 0
	for iter.Next(ctx) {
		k := iter.Val()
		n++
		all.WriteString(k + "\n")
		switch typ := rc.Type(ctx, k).Val(); typ {
		case "string":
			all.WriteString(rc.Get(ctx, k).Val())
		case "hash":
			for f, v := range rc.HGetAll(ctx, k).Val() {
				all.WriteString(f + "=" + v + "\n")
			}
		case "zset":
			all.WriteString(strings.Join(rc.ZRange(ctx, k, 0, -1).Val(), "\n"))
		default:
			t.Fatalf("key %s of unexpected type %s", k, typ)
		}
		all.WriteString("\n")
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	dump := all.String()
	sum := sha256.Sum256([]byte(token))
	switch {
	case n == 0:
		t.Fatal("Redis is empty")
	case strings.Contains(dump, token):
		t.Fatal("Redis holds an instance token")
	case !strings.Contains(dump, hex.EncodeToString(sum[:])):
		t.Fatal("Redis lacks the token's hash: the dump missed the instance records")
	case strings.Contains(dump, fleetSecret):
		t.Fatal("Redis holds an env secret")
	case strings.Contains(dump, "PRIVATE KEY"):
		t.Fatal("Redis holds a private key")
	case !strings.Contains(dump, strings.TrimSpace(caPEM)):
		t.Fatal("Redis lacks the CA certificate that any replica must answer with")
	}
}

// TestFleetCreateRace: two replicas create one id at once; one wins, the
// other answers 409, and both then agree on the winner.
func TestFleetCreateRace(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	a := startReplica(t, rs.URL())
	b := startReplica(t, rs.URL())
	ctx := context.Background()
	for round := 0; round < 10; round++ {
		id := fmt.Sprintf("race-%d", round)
		var wg sync.WaitGroup
		var errs [2]error
		var made [2]control.Created
		for i, srv := range []*apptest.Server{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				made[i], errs[i] = srv.Admin.Create(ctx, id, "")
			}()
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if won >= 0 {
					t.Fatalf("%s: both replicas created it", id)
				}
				won = i
			case apiStatus(err) != 409:
				t.Fatalf("%s: the loser got %v, want 409", id, err)
			}
		}
		if won < 0 {
			t.Fatalf("%s: nobody won: %v", id, errs)
		}
		home := []*apptest.Server{a, b}[won].Advertise()
		for _, srv := range []*apptest.Server{a, b} {
			waitUntil(t, "both to agree on the home of "+id, func() bool { return views(t, srv)[id].Home == home })
		}
		if u, _ := url.Parse(made[won].ProxyURL); u.Host != home {
			t.Fatalf("%s: proxy_url %s, home %s", id, made[won].ProxyURL, home)
		}
	}
}

// TestFleetStoreOutage: Redis stops. Requests are decided on the last
// known state (handlers and KV reads included), control writes answer 503
// "store unavailable: …", status and metrics say the store is down. Redis
// starts again: the replicas reconnect, resync, and writes flow again.
func TestFleetStoreOutage(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, redistest.Options{})
	a := startReplica(t, rs.URL())
	b := startReplica(t, rs.URL())
	created := a.Create(t, "sbx-1", "")
	onA := apptest.Client(t, created)
	if _, err := a.Admin.Call(ctx, "sbx-1", "setOutboundHandler", []json.RawMessage{json.RawMessage(`"hello"`)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Admin.KVPut(ctx, "DATA", "k", []byte("before the outage")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "A to read the KV value", func() bool {
		_, got := call(t, onA, "GET", "http://kv.test/k", nil)
		return got == "before the outage"
	})

	rs.Stop()
	for name, srv := range map[string]*apptest.Server{"A": a, "B": b} {
		waitUntil(t, name+" to report the store down", func() bool { return !fleetStatusOf(t, srv).Store.Up })
		if st := fleetStatusOf(t, srv); st.Store.Error == nil || *st.Store.Error == "" {
			t.Fatalf("%s status names no error: %+v", name, st.Store)
		}
		if m := metric(t, srv.AdminAddr().String(), "outbound_store_up"); m != 0 {
			t.Fatalf("%s outbound_store_up = %v while Redis is down", name, m)
		}
	}
	if code, got := call(t, onA, "GET", "http://x.test/", nil); code != 200 || got != "hello null keyed from sbx-1" {
		t.Fatalf("a request during the outage: %d %q, want the last known policy", code, got)
	}
	if code, got := call(t, onA, "GET", "http://kv.test/k", nil); code != 200 || got != "before the outage" {
		t.Fatalf("a KV read during the outage: %d %q, want the last known value", code, got)
	}
	writes := map[string]func() error{
		"allowHost on A": func() error {
			_, err := a.Admin.Call(ctx, "sbx-1", "allowHost", []json.RawMessage{json.RawMessage(`"x.test"`)})
			return err
		},
		"allowHost on B": func() error {
			_, err := b.Admin.Call(ctx, "sbx-1", "allowHost", []json.RawMessage{json.RawMessage(`"x.test"`)})
			return err
		},
		"create":    func() error { _, err := a.Admin.Create(ctx, "sbx-2", ""); return err },
		"delete":    func() error { return b.Admin.Delete(ctx, "sbx-1") },
		"KV put":    func() error { return b.Admin.KVPut(ctx, "DATA", "k", []byte("x")) },
		"KV delete": func() error { return a.Admin.KVDelete(ctx, "DATA", "k") },
	}
	for name, w := range writes {
		err := w()
		var e *client.APIError
		if !errors.As(err, &e) || e.Status != 503 || !strings.HasPrefix(e.Msg, "store unavailable: ") {
			t.Errorf("%s during the outage: %v, want 503 store unavailable: …", name, err)
		}
	}

	rs.Restart()
	for name, srv := range map[string]*apptest.Server{"A": a, "B": b} {
		waitUntil(t, name+" to report the store up again", func() bool {
			st := fleetStatusOf(t, srv)
			return st.Store.Up && st.Store.Resyncs > 0
		})
	}
	if _, err := b.Admin.Call(ctx, "sbx-1", "setOutboundHandler", []json.RawMessage{json.RawMessage(`"hello"`), json.RawMessage(`{"after":true}`)}); err != nil {
		t.Fatalf("a write after the outage: %v", err)
	}
	waitUntil(t, "B's write after the outage to reach A", func() bool {
		_, got := call(t, onA, "GET", "http://x.test/", nil)
		return got == `hello {"after":true} keyed from sbx-1`
	})
	if _, ok := views(t, a)["sbx-2"]; ok {
		t.Fatal("a create that answered 503 happened")
	}
}
