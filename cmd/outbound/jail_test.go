//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/net/websocket"

	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// The jail tests run `outbound run --jail` for real: new namespaces, a real
// TUN device, real clients (curl, Node's fetch, Python, a Go WebSocket
// client). Every name a jailed client dials is mapped with --connect-to to
// an upstream on this machine's loopback; nothing leaves it.

const (
	jailToken    = "ghp_jail_secret_value"
	jailWSSecret = "ws-jail-secret"
)

// jailFixture is the local upstreams a jailed command reaches.
type jailFixture struct {
	github  *apptest.TLSUpstream
	flags   []string     // run flags: script, vars, --upstream-ca, --connect-to
	trapped atomic.Int64 // connections reaching a trap: must stay 0
	trap    string       // host:port of a listener nothing may reach
	wsSaw   chan string  // the X-Injected header of each WebSocket handshake
}

func newJailFixture(t *testing.T) *jailFixture {
	t.Helper()
	requireJail(t)
	fx := &jailFixture{wsSaw: make(chan string, 4)}
	fx.github = apptest.NewTLSUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "github saw authorization=%q\n", r.Header.Get("Authorization"))
	}), "api.github.com")
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain saw host=%s path=%s\n", r.Host, r.URL.Path)
	}))
	t.Cleanup(plain.Close)
	ws := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) {
		fx.wsSaw <- c.Request().Header.Get("X-Injected")
		io.Copy(c, c)
	}))
	t.Cleanup(ws.Close)
	// An event stream that sends its second event only once the client,
	// having read the first, asks for it: a stream buffered anywhere on
	// the way never finishes.
	release := make(chan struct{})
	var releaseOnce sync.Once
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/release" {
			releaseOnce.Do(func() { close(release) })
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: two\n\n")
	}))
	t.Cleanup(sse.Close)
	echo := apptest.ServeTCP(t, func(c net.Conn) { io.Copy(c, c) })
	fx.trap = apptest.ServeTCP(t, func(c net.Conn) { fx.trapped.Add(1) })

	fx.flags = []string{"--script", filepath.Join("..", "..", "testdata", "jail", "policy.js"),
		"--var", "GITHUB_TOKEN=" + jailToken, "--var", "WS_SECRET=" + jailWSSecret,
		"--upstream-ca", fx.github.CAFile,
		"--connect-to", fx.github.ConnectTo("api.github.com", 443),
		"--connect-to", "plain.test:80:" + strings.TrimPrefix(plain.URL, "http://"),
		"--connect-to", "ws.test:80:" + strings.TrimPrefix(ws.URL, "http://"),
		"--connect-to", "sse.test:80:" + strings.TrimPrefix(sse.URL, "http://"),
		"--connect-to", "raw.test:7000:" + echo,
	}
	for _, port := range []string{"80", "443", "7000"} {
		fx.flags = append(fx.flags, "--connect-to", "denied.test:"+port+":"+fx.trap)
	}
	return fx
}

// run runs argv in the jail and returns stdout, stderr and the exit status.
func (fx *jailFixture) run(t *testing.T, env []string, argv ...string) (string, string, int) {
	t.Helper()
	args := append(append([]string{"run", "--jail"}, fx.flags...), "--")
	return outbound(t, env, append(args, argv...)...)
}

// mustRun is run, failing the test unless the command exits 0.
func (fx *jailFixture) mustRun(t *testing.T, argv ...string) string {
	t.Helper()
	out, stderr, code := fx.run(t, nil, argv...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	return out
}

var (
	jailProbe    sync.Once
	jailProbeErr string
)

// requireJail skips only where this kernel refuses the jail to an
// unprivileged user. As root (CI) the jail tests always run, and a refusal
// fails them.
func requireJail(t *testing.T) {
	t.Helper()
	if os.Getuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI runs as root: the jail tests must run there")
	}
	jailProbe.Do(func() {
		_, stderr, code := outbound(t, nil, "run", "--jail", "--script", examplePath("json-block.js"), "--", "true")
		if code != 0 {
			jailProbeErr = strings.TrimSpace(stderr)
		}
	})
	if jailProbeErr != "" {
		t.Skipf("this kernel refuses an unprivileged jail: %s", jailProbeErr)
	}
}

// need finds a client the test drives. In CI a missing one fails the test:
// .ci/run installs them all.
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil && os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed in CI: .ci/run installs it", tool)
	}
	if err != nil {
		t.Skipf("%s is not installed (.ci/run installs it)", tool)
	}
	return p
}

// needRoot skips a test that must play root's part, except in CI, which
// runs as root.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Getuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI runs as root, and %s", why)
	}
	t.Skip(why)
}

// TestJailNodeFetch is the acceptance check: Node 20's built-in
// fetch ignores HTTP_PROXY, and in the jail it is captured, intercepted and
// gets the injected token all the same.
func TestJailNodeFetch(t *testing.T) {
	fx := newJailFixture(t)
	node := need(t, "node")
	out := fx.mustRun(t, node, "-e", `fetch("https://api.github.com/user").then(r => r.text()).then(t => console.log(process.version, t.trim()))`)
	if !strings.Contains(out, fmt.Sprintf("github saw authorization=%q", "Bearer "+jailToken)) {
		t.Fatalf("node got: %s", out)
	}
}

// TestJailClientsThatIgnoreTheProxy: curl told to bypass the proxy, and
// Python with the proxy variables removed, are captured over HTTPS and
// HTTP; a proxy-honouring curl still works through the proxy's address in
// the jail; a raw TCP client reaches its name's upstream; an event stream
// arrives event by event.
func TestJailClientsThatIgnoreTheProxy(t *testing.T) {
	fx := newJailFixture(t)
	curl, py := need(t, "curl"), need(t, "python3")
	injected := fmt.Sprintf("github saw authorization=%q", "Bearer "+jailToken)
	out := fx.mustRun(t, "sh", "-c", curl+` -sS --noproxy '*' https://api.github.com/user &&
		`+curl+` -sS --noproxy '*' http://plain.test/p &&
		`+curl+` -sS http://plain.test/via-proxy &&
		env -u HTTP_PROXY -u HTTPS_PROXY -u http_proxy -u https_proxy `+py+` -c '
import socket, urllib.request
print("python", urllib.request.urlopen("https://api.github.com/user").read().decode().strip())
s = socket.create_connection(("raw.test", 7000))
s.sendall(b"\x00raw bytes\n")
print("raw echo", repr(s.recv(100)))
events = urllib.request.urlopen("http://sse.test/events")
first = events.readline().decode().strip()
urllib.request.urlopen("http://sse.test/release").read()
print("sse", first, events.read().decode().strip())
'`)
	for _, want := range []string{
		injected + "\nplain saw host=plain.test path=/p\nplain saw host=plain.test path=/via-proxy\n",
		"python " + injected,
		`raw echo b'\x00raw bytes\n'`,
		"sse data: one data: two",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestJailContainsTheCommand: a denied host is refused without a dial, the
// host's loopback is out of reach, and UDP other than DNS goes nowhere.
func TestJailContainsTheCommand(t *testing.T) {
	fx := newJailFixture(t)
	curl, py := need(t, "curl"), need(t, "python3")
	trapPort := fx.trap[strings.LastIndexByte(fx.trap, ':')+1:]
	out := fx.mustRun(t, "sh", "-c", `
		echo https $(`+curl+` -s -o /dev/null -w '%{http_code}' --noproxy '*' https://denied.test/)
		echo http $(`+curl+` -s -o /dev/null -w '%{http_code}' --noproxy '*' http://denied.test/)
		`+curl+` -s --noproxy '*' http://127.0.0.1:`+trapPort+`/; echo loopback4 $?
		`+curl+` -s --noproxy '*' 'http://[::1]:`+trapPort+`/'; echo loopback6 $?
		`+py+` -c '
import socket
s = socket.create_connection(("denied.test", 7000))
s.sendall(b"hello\n")
print("raw denied", repr(s.recv(100)))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("udp.test", 9999))
u.settimeout(2)
u.send(b"anyone?")
try:
    print("udp answered", u.recv(100))
except socket.timeout:
    print("udp dropped")
except ConnectionRefusedError:
    print("udp refused by an ICMP answer")
'`)
	for _, want := range []string{"https 520\n", "http 520\n", "loopback4 7\n", "loopback6 7\n", "raw denied b''\n", "udp dropped\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := fx.trapped.Load(); n != 0 {
		t.Fatalf("%d connections reached a listener the jail must never reach", n)
	}
}

// TestJailWebSocket: a real WebSocket client in the jail, its handshake
// through a handler that adds a header, then frames both ways.
func TestJailWebSocket(t *testing.T) {
	fx := newJailFixture(t)
	out, stderr, code := fx.run(t, []string{"OUTBOUND_TEST_WS_CLIENT=ws://ws.test/echo"}, os.Args[0])
	if code != 0 || !strings.Contains(out, "ws echo: hello through the jail") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	if got := <-fx.wsSaw; got != jailWSSecret {
		t.Fatalf("upstream saw X-Injected=%q", got)
	}
}

// TestJailExitStatusAndSignals: the jailed command's exit status and the
// signals sent to the wrapper pass through as with plain run.
func TestJailExitStatusAndSignals(t *testing.T) {
	fx := newJailFixture(t)
	if _, _, code := fx.run(t, nil, "sh", "-c", "exit 7"); code != 7 {
		t.Fatalf("exit %d, want the command's 7", code)
	}
	if _, stderr, code := fx.run(t, nil, "no-such-command-xyz"); code != 127 || strings.Count(strings.TrimSpace(stderr), "\n") > 3 {
		t.Fatalf("missing command: exit %d, stderr %s", code, stderr)
	}
	checkForwardsSignals(t, append([]string{"run", "--jail"}, fx.flags...))
}

// TestJailUnprivileged: a user without privileges gets the same jail
// through a user namespace, and stays who it is inside. Root plays that
// user; where /dev/net/tun is closed to it, the refusal is one line.
func TestJailUnprivileged(t *testing.T) {
	needRoot(t, "root plays an unprivileged user here (as a user, every jail test is this one)")
	fx := newJailFixture(t)
	curl := need(t, "curl")
	// nobody must reach the binary and the script.
	dir, err := os.MkdirTemp("", "outbound-jail-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "outbound")
	copyFile(t, binary, bin, 0o755)
	script := filepath.Join(dir, "policy.js")
	copyFile(t, fx.flags[1], script, 0o644)
	ca := filepath.Join(dir, "upstream-ca.pem")
	copyFile(t, fx.github.CAFile, ca, 0o644)
	flags := append([]string(nil), fx.flags...)
	flags[1] = script
	for i := range flags {
		if flags[i] == fx.github.CAFile {
			flags[i] = ca
		}
	}
	args := append(append([]string{"run", "--jail"}, flags...), "--", "sh", "-c",
		`id -u; `+curl+` -sS --noproxy '*' http://plain.test/as-user`)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "TMPDIR=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if tunClosedToOthers() {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "/dev/net/tun") || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
			t.Fatalf("with /dev/net/tun closed to the user: %v\nstderr %s", err, errb.String())
		}
		return
	}
	if err != nil || out.String() != "65534\nplain saw host=plain.test path=/as-user\n" {
		t.Fatalf("%v\nstdout %s\nstderr %s", err, out.String(), errb.String())
	}
}

func tunClosedToOthers() bool {
	st, err := os.Stat("/dev/net/tun")
	return err == nil && st.Mode().Perm()&0o006 != 0o006
}

// TestJailChildGetsNoOutboundSecrets: the jailed command's environment is
// built as run's is, without outbound's secrets.
func TestJailChildGetsNoOutboundSecrets(t *testing.T) {
	requireJail(t)
	checkChildGetsNoSecrets(t, "run", "--jail")
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// TestJailRefusedIsOneLine: where the kernel gives no TUN device, --jail
// says so in one line and exits 1; it never runs the command uncaptured.
func TestJailRefusedIsOneLine(t *testing.T) {
	needRoot(t, "hiding /dev/net/tun in a mount namespace needs root")
	unshare := need(t, "unshare")
	marker := filepath.Join(t.TempDir(), "ran")
	cmd := exec.Command(unshare, "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs tmpfs /dev/net && exec "$0" run --jail --script "$1" -- touch "$2"`,
		binary, examplePath("json-block.js"), marker)
	var errb strings.Builder
	cmd.Stderr = &errb
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	line := strings.TrimSpace(errb.String())
	if !ok || ee.ExitCode() != 1 || strings.Contains(line, "\n") || !strings.Contains(line, "no TUN device") {
		t.Fatalf("exit %v, stderr %q", err, line)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran although the jail could not be built")
	}
	t.Log(line)
}
