package app_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// series reads one series (name with its labels, as exposed) from the
// control API's /metrics; 0 when absent, as a counter not yet counted.
func series(t *testing.T, srv *apptest.Server, series string) float64 {
	t.Helper()
	res, err := http.Get("http://" + srv.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// TestMappingOpensOnlyItsOwnDial: --resolve and --connect-to to 127.0.0.1
// opt in the mapping's own dial, and nothing else. The same address under
// every other spelling and port is refused, through the proxy (plain and
// raw CONNECT) and through a handler's fetch, by the guard (the deny
// counter) and before any packet: every spelling is a loopback literal once
// normalised, so the canary stays untouched and no name is looked up.
func TestMappingOpensOnlyItsOwnDial(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Host]++
		mu.Unlock()
		io.WriteString(w, "canary reached")
	}))
	t.Cleanup(canary.Close)
	port := canary.Listener.Addr().(*net.TCPAddr).Port
	otherPort := strconv.Itoa(port%65535 + 1)
	p := strconv.Itoa(port)

	srv := apptest.Start(t, app.Config{
		Script:    securityDir + "policy.js",
		Resolve:   []string{"mapped.test:" + p + ":127.0.0.1"},
		ConnectTo: []string{"connected.test:80:127.0.0.1:" + p},
	})
	open := srv.Create(t, "open", "Open")
	openClient := apptest.Client(t, open)
	fetcher := apptest.Client(t, srv.Create(t, "fetcher", "Fetcher"))
	id, token := credsOf(t, open)

	// The mappings themselves work, for the proxy and for fetch.
	for _, u := range []string{"http://mapped.test:" + p + "/", "http://connected.test/"} {
		for name, c := range map[string]*http.Client{"proxy": openClient, "fetch": fetcher} {
			if code, body := call(t, c, "GET", u, nil); code != 200 || body != "canary reached" {
				t.Fatalf("%s GET %s through its mapping: %d %q", name, u, code, body)
			}
		}
	}
	if code, _ := connectRaw(t, srv.ProxyAddr().String(), "mapped.test:"+p, basicAuth(id, token)); code != 200 {
		t.Fatalf("raw CONNECT through the mapping: %d", code)
	}

	deny := `outbound_upstream_errors_total{kind="deny"}`
	before := series(t, srv, deny)
	attempts := 0
	for _, h := range []string{
		"127.0.0.1", "localhost", "127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "[::ffff:127.0.0.1]",
	} {
		for _, port := range []string{p, otherPort} {
			target := h + ":" + port
			if code, body := call(t, openClient, "GET", "http://"+target+"/", nil); code != 502 || strings.Contains(body, "canary") {
				t.Errorf("proxy GET %s: %d %q, want the guard's 502", target, code, body)
			}
			if code, _ := connectRaw(t, srv.ProxyAddr().String(), target, basicAuth(id, token)); code != 502 {
				t.Errorf("raw CONNECT %s: %d, want the guard's 502", target, code)
			}
			if code, body := call(t, fetcher, "GET", "http://"+target+"/", nil); code == 200 || strings.Contains(body, "canary") {
				t.Errorf("handler fetch %s: %d %q", target, code, body)
			}
			attempts += 3
		}
	}
	if got := series(t, srv, deny) - before; got != float64(attempts) {
		t.Errorf("the guard refused %v dials, want %d (one per attempt): something was not refused by the guard", got, attempts)
	}
	mu.Lock()
	defer mu.Unlock()
	for host, n := range seen {
		if host != "mapped.test:"+p && host != "connected.test" {
			t.Errorf("the canary saw %d requests for %q", n, host)
		}
	}
}
