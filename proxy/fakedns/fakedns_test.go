package fakedns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/outbound-dev/outbound/internal/host"
)

func newPool(t *testing.T, prefix, first string) *Pool {
	t.Helper()
	p, err := NewPool(netip.MustParsePrefix(prefix), netip.MustParseAddr(first))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPoolMapsBothWays(t *testing.T) {
	p := newPool(t, "198.18.0.0/15", "198.18.1.0")
	a := p.Addr("api.github.com")
	if a != netip.MustParseAddr("198.18.1.0") || !p.Contains(a) {
		t.Fatalf("first address %s", a)
	}
	if b := p.Addr("example.com"); b == a || !p.Contains(b) {
		t.Fatalf("second name got %s", b)
	}
	if again := p.Addr("api.github.com"); again != a {
		t.Fatalf("same name, new address %s", again)
	}
	if n, ok := p.Name(a); !ok || n != "api.github.com" {
		t.Fatalf("Name(%s) = %q, %v", a, n, ok)
	}
	if _, ok := p.Name(netip.MustParseAddr("198.18.200.1")); ok {
		t.Fatal("an address never handed out has a name")
	}
	for _, out := range []string{"198.18.0.255", "198.20.0.0", "10.0.0.1", "::1", "198.19.255.255"} {
		if p.Contains(netip.MustParseAddr(out)) {
			t.Errorf("Contains(%s)", out)
		}
	}
}

func TestPoolReusesLeastRecentlyUsed(t *testing.T) {
	p := newPool(t, "10.9.0.0/30", "10.9.0.1") // .1 and .2 (.3 is broadcast)
	a, b := p.Addr("a.test"), p.Addr("b.test")
	p.Name(a) // a is now the most recently used
	c := p.Addr("c.test")
	if c != b {
		t.Fatalf("c got %s, want b's %s", c, b)
	}
	if _, ok := p.Name(b); !ok {
		t.Fatal("reused address has no name")
	}
	if n, _ := p.Name(b); n != "c.test" {
		t.Fatalf("reused address names %q", n)
	}
	if n, _ := p.Name(a); n != "a.test" {
		t.Fatalf("a's address names %q", n)
	}
}

// serve answers DNS over UDP on loopback, as the jail's stack does on its
// own addresses.
func serve(t *testing.T, p *Pool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if res, err := p.Answer(buf[:n]); err == nil {
				pc.WriteTo(res, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// TestGoResolver: Go's own stub resolver, a real client, gets pool
// addresses for A, nothing for AAAA, and names back for PTR.
func TestGoResolver(t *testing.T) {
	p := newPool(t, "198.18.0.0/15", "198.18.1.0")
	addr := serve(t, p)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ips, err := r.LookupNetIP(ctx, "ip", "API.GitHub.com.")
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != 1 || !p.Contains(ips[0]) {
		t.Fatalf("got %v", ips)
	}
	if n, _ := p.Name(ips[0]); n != "api.github.com" {
		t.Fatalf("address maps to %q", n)
	}
	if v6, err := r.LookupNetIP(ctx, "ip6", "api.github.com"); err == nil || len(v6) != 0 {
		t.Fatalf("AAAA: %v, %v", v6, err)
	}
	names, err := r.LookupAddr(ctx, ips[0].String())
	if err != nil || len(names) != 1 || names[0] != "api.github.com." {
		t.Fatalf("PTR: %v, %v", names, err)
	}
	lo, err := r.LookupNetIP(ctx, "ip4", "localhost")
	if err != nil || len(lo) != 1 || lo[0].Unmap() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("localhost: %v, %v", lo, err)
	}
	var dnsErr *net.DNSError
	if _, err := r.LookupNetIP(ctx, "ip4", "bad_name!.test"); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Fatalf("invalid name: %v", err)
	}
}

func query(t testing.TB, name string, typ dnsmessage.Type) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestAnswerWire(t *testing.T) {
	p := newPool(t, "198.18.0.0/15", "198.18.1.0")
	res, err := p.Answer(query(t, "example.com.", dnsmessage.TypeHTTPS))
	if err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(res); err != nil {
		t.Fatal(err)
	}
	if m.ID != 7 || !m.Response || m.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 0 || len(m.Questions) != 1 {
		t.Fatalf("HTTPS query: %+v", m)
	}
	if _, err := p.Answer(res); !errors.Is(err, ErrNotQuery) {
		t.Fatalf("a response was answered: %v", err)
	}
	if _, err := p.Answer([]byte{1, 2, 3}); !errors.Is(err, ErrNotQuery) {
		t.Fatalf("garbage was answered: %v", err)
	}
}

func FuzzAnswer(f *testing.F) {
	f.Add(query(f, "example.com.", dnsmessage.TypeA))
	f.Add(query(f, "1.1.18.198.in-addr.arpa.", dnsmessage.TypePTR))
	f.Add(query(f, "xn--bcher-kva.example.", dnsmessage.TypeAAAA))
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	f.Add(query(f, "0000000.000.", dnsmessage.TypeA))
	f.Fuzz(func(t *testing.T, msg []byte) {
		p, _ := NewPool(netip.MustParsePrefix("198.18.0.0/15"), netip.MustParseAddr("198.18.1.0"))
		res, err := p.Answer(msg)
		if err != nil {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(res); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		for _, a := range m.Answers {
			if r, ok := a.Body.(*dnsmessage.AResource); ok {
				ip := netip.AddrFrom4(r.A)
				if !p.Contains(ip) && !ip.IsLoopback() {
					// Only literals are answered with themselves, in any
					// spelling the host normaliser reads as one (0177.1).
					qn := m.Questions[0].Name.String()
					name, err := host.Normalize(strings.TrimSuffix(qn, "."))
					if lit, perr := netip.ParseAddr(name); err != nil || perr != nil || lit != ip {
						t.Fatalf("answered %s for %s", ip, qn)
					}
				}
			}
		}
	})
}
