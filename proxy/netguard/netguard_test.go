package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		ip     string
		reason string // "" = public
	}{
		// IPv4 public
		{"1.1.1.1", ""},
		{"8.8.8.8", ""},
		{"93.184.216.34", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"192.167.255.255", ""},
		{"192.169.0.0", ""},
		{"223.255.255.255", ""},
		{"11.0.0.0", ""},
		{"126.255.255.255", ""},
		{"128.0.0.0", ""},
		{"169.253.255.255", ""},
		{"169.255.0.0", ""},
		{"198.17.255.255", ""},
		{"198.20.0.0", ""},
		// IPv4 refused
		{"0.0.0.0", "this network"},
		{"0.1.2.3", "this network"},
		{"10.0.0.1", "private"},
		{"10.255.255.255", "private"},
		{"100.64.0.1", "cgnat"},
		{"100.127.255.255", "cgnat"},
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"169.254.169.254", "link-local"},
		{"169.254.0.1", "link-local"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.0.0.170", "reserved"},
		{"192.0.2.1", "documentation"},
		{"192.88.99.1", "reserved"},
		{"192.168.1.1", "private"},
		{"198.18.0.1", "benchmarking"},
		{"198.19.255.255", "benchmarking"},
		{"198.51.100.7", "documentation"},
		{"203.0.113.9", "documentation"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.255", "broadcast"},
		// IPv6 public
		{"2606:4700:4700::1111", ""},
		{"2001:4860:4860::8888", ""},
		{"2a00:1450:4001:80b::200e", ""},
		{"2001:1::1", ""},
		{"2001:3::1", ""},
		{"64:ff9b::808:808", ""}, // NAT64 of 8.8.8.8
		{"2002:808:808::1", ""},  // 6to4 of 8.8.8.8
		{"::ffff:8.8.8.8", ""},   // mapped 8.8.8.8
		{"::ffff:93.184.216.34", ""},
		// IPv6 refused
		{"::", "unspecified"},
		{"::1", "loopback"},
		{"::2", "ipv4-compatible (deprecated)"},
		{"::127.0.0.1", "ipv4-compatible (deprecated)"},
		{"::ffff:127.0.0.1", "loopback via ipv4-mapped"},
		{"::ffff:7f00:1", "loopback via ipv4-mapped"},
		{"::ffff:10.1.2.3", "private via ipv4-mapped"},
		{"::ffff:169.254.169.254", "link-local via ipv4-mapped"},
		{"::ffff:0.0.0.0", "this network via ipv4-mapped"},
		{"64:ff9b::7f00:1", "loopback via nat64"},
		{"64:ff9b::a9fe:a9fe", "link-local via nat64"},
		{"64:ff9b::c0a8:101", "private via nat64"},
		{"64:ff9b::6440:1", "cgnat via nat64"},
		{"64:ff9b:1::808:808", "local-use nat64"},
		{"2002:7f00:1::", "loopback via 6to4"},
		{"2002:a00:1::1", "private via 6to4"},
		{"2002:a9fe:a9fe::", "link-local via 6to4"},
		{"2002:e000:1::", "multicast via 6to4"},
		{"100::1", "discard-only"},
		{"2001::1", "teredo"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"},
		{"2001:2::1", "benchmarking"},
		{"2001:10::1", "reserved"},
		{"2001:20::1", "reserved"},
		{"2001:db8::1", "documentation"},
		{"3fff::1", "documentation"},
		{"5f00::1", "srv6"},
		{"fc00::1", "ula"},
		{"fd12:3456:789a::1", "ula"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"febf::1", "link-local"},
		{"fec0::1", "site-local (deprecated)"},
		{"ff02::1", "multicast"},
		{"ff0e::1", "multicast"},
		{"4000::1", "not global unicast"},
		{"1::1", "not global unicast"},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.ip)
			if got := Classify(ip); got != tc.reason {
				t.Errorf("Classify(%s) = %q, want %q", tc.ip, got, tc.reason)
			}
			err := New(Options{}).Check(netip.AddrPortFrom(ip, 443))
			if (err == nil) != (tc.reason == "") {
				t.Errorf("Check(%s) = %v", tc.ip, err)
			}
			if err != nil && !IsDenyError(err) {
				t.Errorf("Check error %T is not a DenyError", err)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	self := []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:3128"),
		netip.MustParseAddrPort("[::1]:3129"),
	}
	tests := []struct {
		name   string
		opts   Options
		target string
		want   string // "" = allowed, else the deny reason
	}{
		{"default loopback", Options{Self: self}, "127.0.0.1:8080", "loopback"},
		{"allow-private loopback", Options{AllowPrivate: true, Self: self}, "127.0.0.1:8080", ""},
		{"allow-private metadata", Options{AllowPrivate: true}, "169.254.169.254:80", ""},
		{"allow-private self", Options{AllowPrivate: true, Self: self}, "127.0.0.1:3128", "self"},
		{"allow-private self v6", Options{AllowPrivate: true, Self: self}, "[::1]:3129", "self"},
		{"allow-private self mapped", Options{AllowPrivate: true, Self: self}, "[::ffff:127.0.0.1]:3128", "self"},
		{"allow-private other loopback same port", Options{AllowPrivate: true, Self: self}, "127.0.0.2:3128", ""},
		{"allow-private unspecified to self port", Options{AllowPrivate: true, Self: self}, "0.0.0.0:3128", "self"},
		{"allow-private v6 unspecified to self port", Options{AllowPrivate: true, Self: self}, "[::]:3129", "self"},
		{"wildcard listener, loopback dial", Options{AllowPrivate: true, Self: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:3128")}}, "127.9.9.9:3128", "self"},
		{"wildcard listener, other port", Options{AllowPrivate: true, Self: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:3128")}}, "127.9.9.9:3127", ""},
		{"allow-net range", Options{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "10.1.2.3:443", ""},
		{"allow-net outside range", Options{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "10.2.0.1:443", "private"},
		{"allow-net unmasked prefix", Options{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/16")}}, "10.1.9.9:443", ""},
		{"allow-net mapped target", Options{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "[::ffff:10.1.2.3]:443", ""},
		{"allow-net v6", Options{Allow: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}}, "[fd00::5]:443", ""},
		{"allow-net cannot open self", Options{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Self: self}, "127.0.0.1:3128", "self"},
		{"public unaffected by self", Options{Self: self}, "8.8.8.8:3128", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := New(tc.opts).Check(netip.MustParseAddrPort(tc.target))
			var d *DenyError
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && !errors.As(err, &d):
				t.Fatalf("allowed, want %q (err %v)", tc.want, err)
			case tc.want != "" && d.Reason != tc.want:
				t.Fatalf("reason %q, want %q", d.Reason, tc.want)
			}
		})
	}
}

func TestAddSelf(t *testing.T) {
	g := New(Options{AllowPrivate: true})
	ap := netip.MustParseAddrPort("127.0.0.1:40000")
	if err := g.Check(ap); err != nil {
		t.Fatalf("before AddSelf: %v", err)
	}
	g.AddSelf(ap)
	if err := g.Check(ap); !IsDenyError(err) {
		t.Fatalf("after AddSelf: %v", err)
	}
}

// The guard runs on the resolved address: a name that resolves to loopback
// is refused, and so is every literal spelling of it that the resolver accepts.
func TestDialerControl(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	dial := func(g *Guard, host string) error {
		d := &net.Dialer{Control: g.Control, Timeout: 5 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err == nil {
			c.Close()
		}
		return err
	}
	strict := New(Options{})
	for _, h := range []string{"localhost", "127.0.0.1", "::ffff:127.0.0.1", "127.1", "0x7f000001", "2130706433"} {
		err := dial(strict, h)
		if err == nil {
			t.Errorf("dial %s: allowed", h)
			continue
		}
		var dnsErr *net.DNSError
		if !IsDenyError(err) && !errors.As(err, &dnsErr) {
			// Legacy spellings are not resolvable by Go (no DNS here), which
			// is also a refusal; anything else is a bug.
			t.Errorf("dial %s: %v is neither a DenyError nor a DNS failure", h, err)
		}
		if h == "localhost" || h == "127.0.0.1" || h == "::ffff:127.0.0.1" {
			if !IsDenyError(err) {
				t.Errorf("dial %s: %v, want DenyError", h, err)
			}
		}
	}
	open := New(Options{AllowPrivate: true})
	if err := dial(open, "127.0.0.1"); err != nil {
		t.Fatalf("AllowPrivate dial: %v", err)
	}
	open.AddSelf(netip.MustParseAddrPort(ln.Addr().String()))
	if err := dial(open, "localhost"); !IsDenyError(err) {
		t.Fatalf("self dial with AllowPrivate: %v", err)
	}
}

func TestControlUnparsable(t *testing.T) {
	if err := New(Options{AllowPrivate: true}).Control("unix", "/tmp/sock", nil); !IsDenyError(err) {
		t.Fatalf("unix address: %v", err)
	}
}

func TestDenyErrorMessage(t *testing.T) {
	err := New(Options{}).Check(netip.MustParseAddrPort("10.0.0.1:22"))
	wrapped := fmt.Errorf("dial upstream: %w", err)
	if !IsDenyError(wrapped) {
		t.Fatal("IsDenyError does not see through wrapping")
	}
	if !strings.Contains(err.Error(), "10.0.0.1:22") || !strings.Contains(err.Error(), "private") {
		t.Errorf("message %q lacks address or reason", err)
	}
	if IsDenyError(errors.New("x")) || IsDenyError(nil) {
		t.Error("IsDenyError true for a foreign error")
	}
}

// FuzzClassify checks the embedding rules hold for every IPv4 address: the
// mapped, NAT64 and 6to4 forms of a refused address are refused, and of a
// public one allowed; and AllowPrivate refuses only self.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "10.0.0.1", "8.8.8.8", "169.254.169.254", "100.64.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1"} {
		a := netip.MustParseAddr(s).As4()
		f.Add(a[:], uint16(443))
	}
	f.Add(netip.MustParseAddr("fe80::1").AsSlice(), uint16(80))
	f.Add(netip.MustParseAddr("2606:4700::1").AsSlice(), uint16(80))
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		reason := Classify(ip) // must not panic
		if ip.Is4() {
			v4 := ip.As4()
			var nat64, sixto4 [16]byte
			copy(nat64[:], netip.MustParseAddr("64:ff9b::").AsSlice())
			copy(nat64[12:], v4[:])
			sixto4[0], sixto4[1] = 0x20, 0x02
			copy(sixto4[2:6], v4[:])
			for _, form := range []netip.Addr{netip.AddrFrom16(ip.As16()), netip.AddrFrom16(nat64), netip.AddrFrom16(sixto4)} {
				if (Classify(form) == "") != (reason == "") {
					t.Fatalf("%s is %q but %s is %q", ip, reason, form, Classify(form))
				}
			}
		}
		ap := netip.AddrPortFrom(ip, port)
		if err := New(Options{}).Check(ap); (err == nil) != (reason == "") {
			t.Fatalf("Check(%s)=%v but Classify=%q", ap, err, reason)
		}
		g := New(Options{AllowPrivate: true, Self: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:3128")}})
		err := g.Check(ap)
		isSelf := port == 3128 && (ip.Unmap() == netip.MustParseAddr("127.0.0.1") || ip.Unmap().IsUnspecified())
		if (err != nil) != isSelf {
			t.Fatalf("AllowPrivate Check(%s) = %v, self=%v", ap, err, isSelf)
		}
	})
}

// ControlAllowing lets exactly the named addresses through, never the
// proxy's own, and judges every other address as Control does.
func TestControlAllowing(t *testing.T) {
	self := netip.MustParseAddrPort("127.0.0.1:3128")
	g := New(Options{Self: []netip.AddrPort{self}})
	control := g.ControlAllowing(netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("[::ffff:10.0.0.1]:443"), self)
	for addr, allowed := range map[string]bool{
		"127.0.0.1:8080":          true,
		"[::ffff:127.0.0.1]:8080": true, // the same address, mapped
		"10.0.0.1:443":            true,
		"127.0.0.1:8081":          false, // another port
		"127.0.0.2:8080":          false, // another address
		"[::1]:8080":              false,
		"10.0.0.1:80":             false,
		"127.0.0.1:3128":          false, // self, even when named
		"8.8.8.8:53":              true,  // public: as Control
	} {
		err := control("tcp", addr, nil)
		if (err == nil) != allowed {
			t.Errorf("%s: %v, want allowed=%v", addr, err, allowed)
		}
		if err != nil && !IsDenyError(err) {
			t.Errorf("%s: %v is not a DenyError", addr, err)
		}
	}
}
