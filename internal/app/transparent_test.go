//go:build linux

package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
	"github.com/outbound-dev/outbound/proxy/control"
)

// The transparent listener is tested for real: the test binary runs itself
// again in a new network namespace, where it builds a veth pair (the
// "container" side is 10.203.0.2), installs the README's iptables REDIRECT
// rule, and serves outbound there. Clients dial addresses of TEST-NET-3
// (203.0.113.0/24): nothing answers there, so a reply can only come from
// the redirect, and outbound dials the names, which --connect-to maps to
// upstreams on the namespace's own loopback.

const netnsHelperEnv = "OUTBOUND_TEST_NETNS_HELPER"

func TestTransparentListener(t *testing.T) {
	if os.Getenv(netnsHelperEnv) != "" {
		transparentInNetns(t)
		return
	}
	skip := t.Skip
	if os.Getenv("CI") != "" { // CI runs as root and .ci/run installs iptables
		skip = t.Fatal
	}
	if os.Getuid() != 0 {
		skip("needs root: a network namespace with iptables rules")
		return
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		skip("iptables is not installed (.ci/run installs it)")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTransparentListener$", "-test.v")
	cmd.Env = append(os.Environ(), netnsHelperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestTransparentListener")) {
		t.Fatalf("in a new network namespace: %v\n%s", err, out)
	}
}

// transparentInNetns is the test body, run inside the new namespace.
func transparentInNetns(t *testing.T) {
	setupVeth(t)
	github := apptest.NewTLSUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "github saw authorization=%q", r.Header.Get("Authorization"))
	}), "api.github.com")
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain saw host=%s", r.Host)
	}))
	t.Cleanup(plain.Close)
	echo := apptest.ServeTCP(t, func(c net.Conn) { io.Copy(c, c) })
	var trapped atomic.Int64
	trap := apptest.ServeTCP(t, func(net.Conn) { trapped.Add(1) })

	srv := apptest.Start(t, app.Config{
		Script:      "../../testdata/jail/policy.js",
		Transparent: "127.0.0.1:0",
		Vars:        map[string]string{"GITHUB_TOKEN": "ghp_transparent", "WS_SECRET": "x"},
		UpstreamCA:  []string{github.CAFile},
		ConnectTo: []string{
			github.ConnectTo("api.github.com", 443),
			"plain.test:80:" + strings.TrimPrefix(plain.URL, "http://"),
			"203.0.113.11:7000:" + echo,
			"denied.test:80:" + trap,
		},
		// Long enough for the drain below on a busy machine; it ends as
		// soon as the connection does.
		ShutdownGrace: time.Minute,
	})
	port := srv.TransparentAddr().(*net.TCPAddr).Port
	// The README's rule, for traffic this namespace sends out.
	iptables(t, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "203.0.113.0/24", "-j", "REDIRECT", "--to-ports", fmt.Sprint(port))

	created := createWithSources(t, srv, `{"id":"sbx-t","sources":["10.203.0.2/32"]}`)
	var view struct{ Sources []string }
	getJSON(t, srv, "/v1/instances/sbx-t", &view)
	if len(view.Sources) != 1 || view.Sources[0] != "10.203.0.2/32" {
		t.Fatalf("instance view sources %v", view.Sources)
	}

	from := func(src string) *net.Dialer {
		return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(created.CAPEM))
	client := func(src, to string) *http.Client {
		d := from(src)
		tr := &http.Transport{
			Proxy:           nil,
			DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", to) },
			TLSClientConfig: &tls.Config{RootCAs: pool},
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 20 * time.Second}
	}
	get := func(c *http.Client, url string) string {
		t.Helper()
		res, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return fmt.Sprintf("%d %s", res.StatusCode, b)
	}

	// HTTP by Host, HTTPS by SNI (intercepted with the instance's CA and
	// injected): the names are dialled, never 203.0.113.10.
	if got := get(client("10.203.0.2", "203.0.113.10:80"), "http://plain.test/x"); got != "200 plain saw host=plain.test" {
		t.Errorf("HTTP: %s", got)
	}
	if got := get(client("10.203.0.2", "203.0.113.10:443"), "https://api.github.com/user"); got != `200 github saw authorization="Bearer ghp_transparent"` {
		t.Errorf("HTTPS: %s", got)
	}
	if got := get(client("10.203.0.2", "203.0.113.10:80"), "http://denied.test/"); !strings.HasPrefix(got, "520 ") {
		t.Errorf("denied host: %s", got)
	}

	// A raw stream goes to the address it was sent to, decided as a raw
	// tunnel (enableInternet) for that address.
	c, err := from("10.203.0.2").Dial("tcp", "203.0.113.11:7000")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprint(c, "\x00raw\n")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "\x00raw\n" {
		t.Fatalf("raw echo %q, %v", buf, err)
	}
	c.Close()

	// A client address no instance owns is closed, and logged.
	if _, err := client("10.203.0.3", "203.0.113.10:80").Get("http://plain.test/"); err == nil {
		t.Error("a request from an unknown source was answered")
	}
	waitLog(t, srv, "no instance has this client address")
	if n := trapped.Load(); n != 0 {
		t.Fatalf("%d connections reached the denied host's listener", n)
	}

	// Shutdown drains a transparent connection as it does a proxied one:
	// it keeps working once the listeners are closed, until it ends.
	c, err = from("10.203.0.2").Dial("tcp", "203.0.113.11:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	echoed := func(msg string) bool {
		fmt.Fprint(c, msg)
		buf := make([]byte, len(msg))
		_, err := io.ReadFull(c, buf)
		return err == nil && string(buf) == msg
	}
	if !echoed("\x00one\n") {
		t.Fatal("raw echo before the shutdown failed")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Stop() }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		pc, err := net.Dial("tcp", srv.ProxyAddr().String())
		if err != nil {
			break // the shutdown has started
		}
		pc.Close()
		if time.Now().After(deadline) {
			t.Fatal("the proxy listener still accepts after Stop")
		}
	}
	if !echoed("\x00two\n") {
		t.Fatal("a transparent connection was cut as the shutdown started; want it drained")
	}
	c.Close()
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if log := srv.Log.String(); strings.Contains(log, `msg="proxy shutdown"`) {
		t.Fatalf("the shutdown had to cut connections:\n%s", log)
	}
}

// setupVeth builds va (10.203.0.2, 10.203.0.3) and its peer vb (10.203.0.1)
// in the current namespace, with TEST-NET-3 routed through vb.
func setupVeth(t *testing.T) {
	t.Helper()
	must := func(what string, err error) {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	must("lo", err)
	must("lo up", netlink.LinkSetUp(lo))
	must("veth", netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "va"}, PeerName: "vb"}))
	va, err := netlink.LinkByName("va")
	must("va", err)
	vb, err := netlink.LinkByName("vb")
	must("vb", err)
	for _, a := range []struct {
		l    netlink.Link
		addr string
	}{{va, "10.203.0.2/24"}, {va, "10.203.0.3/24"}, {vb, "10.203.0.1/24"}} {
		addr, err := netlink.ParseAddr(a.addr)
		must("parse "+a.addr, err)
		must("address "+a.addr, netlink.AddrAdd(a.l, addr))
	}
	must("va up", netlink.LinkSetUp(va))
	must("vb up", netlink.LinkSetUp(vb))
	_, dst, _ := net.ParseCIDR("203.0.113.0/24")
	must("route", netlink.RouteAdd(&netlink.Route{LinkIndex: va.Attrs().Index, Dst: dst, Gw: net.ParseIP("10.203.0.1")}))
}

func iptables(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %v: %v\n%s", args, err, out)
	}
}

func createWithSources(t *testing.T, srv *apptest.Server, body string) control.Created {
	t.Helper()
	res, err := http.Post("http://"+srv.AdminAddr().String()+"/v1/instances", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var c control.Created
	if err := json.NewDecoder(res.Body).Decode(&c); err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %v", res.StatusCode, err)
	}
	return c
}

func getJSON(t *testing.T, srv *apptest.Server, path string, v any) {
	t.Helper()
	res, err := http.Get("http://" + srv.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func waitLog(t *testing.T, srv *apptest.Server, what string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(srv.Log.String(), what); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %q:\n%s", what, srv.Log.String())
		}
	}
}
