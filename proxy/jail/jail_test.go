//go:build linux

package jail

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary is both sides of the jail: its TestMain dispatches the
// jail's child verb (as outbound's main does), and with jailClientEnv set
// it is the client that runs inside.
const jailClientEnv = "OUTBOUND_JAIL_TEST_CLIENT"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ChildVerb {
		os.Exit(ChildMain(os.Args[2:], os.Stderr))
	}
	if addr := os.Getenv(jailClientEnv); addr != "" {
		os.Exit(jailClient(addr))
	}
	os.Exit(m.Run())
}

// jailClient runs in the jail: a name through the jail's DNS, the proxy
// address, UDP to a port other than 53, and the host's loopback.
func jailClient(hostLoopback string) int {
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	d := net.Dialer{Timeout: 10 * time.Second}
	if c, err := d.Dial("tcp", "echo.test:7000"); err != nil {
		say("echo: %v", err)
	} else {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprint(c, "ping\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		say("echo: %q %v", line, err)
		c.Close()
	}
	if c, err := d.Dial("tcp", netip.AddrPortFrom(Gateway, ProxyPort).String()); err != nil {
		say("proxy: %v", err)
	} else {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		say("proxy: %q %v", line, err)
		c.Close()
	}
	if u, err := net.Dial("udp", "udp.test:9999"); err != nil {
		say("udp: %v", err)
	} else {
		u.Write([]byte("anyone?"))
		u.SetReadDeadline(time.Now().Add(time.Second))
		_, err := u.Read(make([]byte, 10))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			say("udp: dropped")
		} else {
			say("udp: %v", err)
		}
	}
	if _, err := d.Dial("tcp", hostLoopback); err != nil {
		say("host loopback: unreachable")
	} else {
		say("host loopback: reached")
	}
	return 0
}

// captured records what the stack handed over.
type captured struct {
	mu    sync.Mutex
	conns []string
}

func (c *captured) serve(ctx context.Context, conn net.Conn, host string, port int) {
	c.mu.Lock()
	c.conns = append(c.conns, fmt.Sprintf("%s:%d", host, port))
	c.mu.Unlock()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	io.Copy(conn, conn)
}

func TestJailStack(t *testing.T) {
	// The proxy stand-in answers one line; the host's loopback listener
	// must never see the jail.
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer proxyLn.Close()
	go func() {
		for {
			c, err := proxyLn.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "proxy here\n")
			c.Close()
		}
	}()
	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	reached := make(chan struct{}, 1)
	go func() {
		if c, err := hostLn.Accept(); err == nil {
			c.Close()
			reached <- struct{}{}
		}
	}()

	var out, errb bytes.Buffer
	p, err := Prepare(Options{Argv: []string{os.Args[0]}, Stdout: &out, Stderr: &errb, Dir: t.TempDir()})
	if err != nil && os.Getuid() != 0 && os.Getenv("CI") == "" {
		t.Skipf("this kernel refuses an unprivileged jail: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var cap captured
	var logs bytes.Buffer
	j, err := p.Start(append(os.Environ(), jailClientEnv+"="+hostLn.Addr().String()), StackOptions{
		Serve:  cap.serve,
		Proxy:  netip.MustParseAddrPort(proxyLn.Addr().String()),
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Wait(); err != nil {
		t.Fatalf("client: %v\nstdout %s\nstderr %s", err, out.String(), errb.String())
	}
	want := `echo: "ping\n" <nil>
proxy: "proxy here\n" <nil>
udp: dropped
host loopback: unreachable
`
	if out.String() != want {
		t.Fatalf("in the jail:\n%s\nwant:\n%s\nstderr %s", out.String(), want, errb.String())
	}
	if len(cap.conns) != 1 || cap.conns[0] != "echo.test:7000" {
		t.Fatalf("captured %v, want the name and port the client dialled", cap.conns)
	}
	select {
	case <-reached:
		t.Fatal("the jail reached the host's loopback")
	default:
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("stack warnings:\n%s", logs.String())
	}
}
