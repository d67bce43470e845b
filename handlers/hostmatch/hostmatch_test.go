package hostmatch

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/outbound-dev/outbound/internal/host"
)

// TestSpecGlobTable is every row of docs/policy.md "Glob patterns".
func TestSpecGlobTable(t *testing.T) {
	rows := []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{"example.com", []string{"example.com"}, []string{"sub.example.com"}},
		{"*.example.com", []string{"api.example.com", "a.b.example.com"}, []string{"example.com"}},
		{"google.*", []string{"google.com", "google.co.uk"}, []string{"maps.google.com"}},
		{"api.*.com", []string{"api.stripe.com", "api.test.com"}, []string{"api.stripe.co.uk"}},
		{"*", []string{"example.com", "a.b.c", "127.0.0.1", "::1", "xn--bcher-kva.de"}, nil},
	}
	for _, r := range rows {
		p, err := Parse(r.pattern)
		if err != nil {
			t.Fatalf("Parse(%q): %v", r.pattern, err)
		}
		l, err := Compile([]string{r.pattern})
		if err != nil {
			t.Fatal(err)
		}
		var tab Table[string]
		if _, err := tab.Add(r.pattern, r.pattern); err != nil {
			t.Fatal(err)
		}
		check := func(h string, want bool) {
			if got := p.Match(h); got != want {
				t.Errorf("Pattern %q Match(%q) = %v, want %v", r.pattern, h, got, want)
			}
			if got := l.Match(h); got != want {
				t.Errorf("List [%q] Match(%q) = %v, want %v", r.pattern, h, got, want)
			}
			if _, got := tab.Lookup(h); got != want {
				t.Errorf("Table {%q} Lookup(%q) = %v, want %v", r.pattern, h, got, want)
			}
		}
		for _, h := range r.match {
			check(h, true)
		}
		for _, h := range r.noMatch {
			check(h, false)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		// normalisation of patterns (deviation: upstream is case-sensitive)
		{"Example.COM.", "example.com", true},
		{"EXAMPLE.com...", "example.com", true},
		{"*.Example.com", "api.example.com", true},
		{"*.EXAMPLE.COM.", "a.b.example.com", true},
		{"bücher.de", "xn--bcher-kva.de", true},
		{"*.bücher.de", "shop.xn--bcher-kva.de", true},
		{"XN--BCHER-KVA.de", "xn--bcher-kva.de", true},
		{"API.*.COM", "api.stripe.com", true},
		// globs
		{"*example.com", "example.com", true}, // empty run
		{"*example.com", "evilexample.com", true},
		{"*.example.com", ".example.com", true}, // not a canonical host, but the glob is string-level
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"a**b", "ab", true},
		{"*.*", "com", false},
		{"*.*", "a.b", true},
		{"*-api.example.com", "eu-api.example.com", true},
		{"*-api.example.com", "api.example.com", false},
		{"ex*.com", "example.com", true},
		{"ex*.com", "example.org", false},
		{"*.com", "example.com.evil.org", false},
		{"example.*", "example.com.evil.org", true}, // as upstream: '*' spans dots
		{"10.*", "10.1.2.3", true},                  // a glob compares IP text
		{"10.*", "::ffff:10.1.2.3", true},           // mapped IPv4 is its IPv4
		// bare IPs in any spelling
		{"127.0.0.1", "127.0.0.1", true},
		{"127.1", "127.0.0.1", true},
		{"0x7f.0.0.1", "127.0.0.1", true},
		{"2130706433", "127.0.0.1", true},
		{"0177.0.0.1", "127.0.0.1", true},
		{"127.0.0.1", "::ffff:127.0.0.1", true},
		{"::ffff:127.0.0.1", "127.0.0.1", true},
		{"[::1]", "::1", true},
		{"0:0::1", "::1", true},
		{"2001:DB8::1", "2001:db8::1", true},
		{"127.0.0.1", "127.0.0.2", false},
		{"127.0.0.1", "localhost", false},
		// CIDR
		{"10.0.0.0/8", "10.1.2.3", true},
		{"10.0.0.0/8", "11.0.0.1", false},
		{"10.0.0.0/8", "::ffff:10.9.9.9", true},
		{"10.0.0.0/8", "10.example.com", false},
		{"10.1.2.3/8", "10.200.0.1", true}, // host bits are masked
		{"10.0.0.0/16", "10.0.255.255", true},
		{"10.0.0.0/16", "10.1.0.0", false},
		{"0xa.0.0.0/8", "10.0.0.1", true},
		{"2001:db8::/32", "2001:db8:1::5", true},
		{"2001:db8::/32", "2001:db9::1", false},
		{"[2001:db8::]/32", "2001:db8::1", true},
		{"::ffff:10.0.0.0/104", "10.3.4.5", true},
		{"0.0.0.0/0", "1.2.3.4", true},
		{"0.0.0.0/0", "::1", false},
		{"::/0", "::1", true},
		{"192.168.1.1/32", "192.168.1.1", true},
		{"192.168.1.1/32", "192.168.1.2", false},
	}
	for _, tt := range tests {
		p, err := Parse(tt.pattern)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.pattern, err)
			continue
		}
		if got := p.Match(tt.host); got != tt.want {
			t.Errorf("Parse(%q) (normalised %q).Match(%q) = %v, want %v", tt.pattern, p, tt.host, got, tt.want)
		}
		l, _ := Compile([]string{"unrelated.example", "*.unrelated.com", "*x.example.com", "un.*", tt.pattern})
		if got := l.Match(tt.host); got != tt.want {
			t.Errorf("List[%q].Match(%q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
		}
	}
}

func TestParseNormalForm(t *testing.T) {
	tests := []struct {
		in, want string
		kind     Kind
	}{
		{"Example.COM.", "example.com", Exact},
		{"*.Example.com", "*.example.com", Glob},
		{"**.example.com", "*.example.com", Glob},
		{"*.bücher.DE", "*.xn--bcher-kva.de", Glob},
		{"0x7f.1", "127.0.0.1", Exact},
		{"::ffff:127.0.0.1", "127.0.0.1", Exact},
		{"[2001:0DB8::1]", "2001:db8::1", Exact},
		{"10.1.2.3/8", "10.0.0.0/8", CIDR},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8", CIDR},
		{"*", "*", Glob},
	}
	for _, tt := range tests {
		p, err := Parse(tt.in)
		if err != nil || p.String() != tt.want || p.Kind() != tt.kind || p.Raw() != tt.in {
			t.Errorf("Parse(%q) = %q kind %d raw %q, %v; want %q kind %d", tt.in, p, p.Kind(), p.Raw(), err, tt.want, tt.kind)
		}
	}
}

func TestParseErrors(t *testing.T) {
	bad := []string{
		"", ".", "a..b", ".example.com", "exa mple.com", "example.com:443",
		"http://example.com", "user@example.com", "ex%41mple.com", "a\\b",
		"[[x]]", "[::1", "*.exa mple.com", "*\u00fc.com", "*.a..b", "*:*",
		"*/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/8",
		"example.com/8", "2001:db8::/129", "10.0.0.0/ 8", "10.0.0.0/0x8",
		"1.2.3.4.5", strings.Repeat("a", 64) + ".com", "*." + strings.Repeat("a", 64),
		strings.Repeat("*", 600), "*\x00", "*.example.com\n",
	}
	for _, p := range bad {
		_, err := Parse(p)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error", p)
			continue
		}
		if !errors.Is(err, ErrBadPattern) || !strings.Contains(err.Error(), fmt.Sprintf("%q", p)) {
			t.Errorf("Parse(%q) error %q should wrap ErrBadPattern and name the pattern", p, err)
		}
		if _, err := Compile([]string{"ok.example", p}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", p)) {
			t.Errorf("Compile with %q: error %v does not name the pattern", p, err)
		}
	}
}

func TestListEmptyAndOrder(t *testing.T) {
	l, err := Compile([]string{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Match("example.com") || l.Len() != 0 {
		t.Fatal("an empty list matches nothing")
	}
	l, _ = Compile([]string{"a.com", "*.b.com", "10.0.0.0/8", "c.com"})
	if l.Len() != 4 {
		t.Fatalf("Len = %d", l.Len())
	}
	var got []string
	for _, p := range l.Patterns() {
		got = append(got, p.String())
	}
	if strings.Join(got, ",") != "a.com,*.b.com,10.0.0.0/8,c.com" {
		t.Fatalf("Patterns() = %v", got)
	}
}

func TestTableOrder(t *testing.T) {
	var tab Table[string]
	for _, kv := range [][2]string{
		{"*.example.com", "glob1"},
		{"api.example.com", "exact"},
		{"*.com", "glob2"},
		{"API.Example.COM.", "dup-exact"}, // same key normalised: first wins
		{"*.EXAMPLE.com", "dup-glob"},
		{"10.0.0.0/8", "cidr"},
		{"10.1.2.3", "ip"},
		{"*", "all"},
	} {
		if _, err := tab.Add(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if tab.Len() != 6 {
		t.Fatalf("Len = %d, want 6 distinct keys", tab.Len())
	}
	tests := []struct{ host, want string }{
		{"api.example.com", "exact"}, // exact beats an earlier glob
		{"www.example.com", "glob1"}, // first glob in insertion order
		{"foo.com", "glob2"},
		{"10.1.2.3", "ip"},
		{"::ffff:10.1.2.3", "ip"},
		{"10.9.9.9", "cidr"},
		{"example.org", "all"},
	}
	for _, tt := range tests {
		if got, ok := tab.Lookup(tt.host); !ok || got != tt.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tt.host, got, ok, tt.want)
		}
	}
	var empty Table[int]
	if _, ok := empty.Lookup("x.com"); ok {
		t.Fatal("empty table matched")
	}
	if _, err := empty.Add("bad host", 1); err == nil {
		t.Fatal("Add accepted a bad pattern")
	}
}

// naiveGlob is an exponential reference matcher for the fuzz test.
func naiveGlob(p, h string) bool {
	if p == "" {
		return h == ""
	}
	if p[0] == '*' {
		for i := 0; i <= len(h); i++ {
			if naiveGlob(p[1:], h[i:]) {
				return true
			}
		}
		return false
	}
	return h != "" && p[0] == h[0] && naiveGlob(p[1:], h[1:])
}

func FuzzMatch(f *testing.F) {
	seeds := [][2]string{
		{"*.example.com", "api.example.com"}, {"google.*", "maps.google.com"},
		{"api.*.com", "api.stripe.co.uk"}, {"*", "::1"}, {"a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaa"},
		{"10.0.0.0/8", "0x0a.1"}, {"127.1", "2130706433"}, {"Example.COM.", "EXAMPLE.com.."},
		{"*.bücher.de", "shop.BÜCHER.de"}, {"::ffff:127.0.0.1", "[::ffff:7f00:1]"},
		{"*.com", "evil.com\x00.example.org"}, {"*", "[[x]]"}, {"a*", "a%2e"},
		{"*.a", "a\\.a"}, {"2001:db8::/32", "[2001:DB8::1]"}, {"x*y", "x@y"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, rawHost string) {
		p, perr := Parse(pattern)
		h, herr := host.Normalize(rawHost)
		if perr != nil || herr != nil {
			return
		}
		got := p.Match(h)
		// The list and table must agree with the single pattern.
		l, err := Compile([]string{pattern})
		if err != nil {
			t.Fatalf("Compile(%q) failed after Parse succeeded: %v", pattern, err)
		}
		if l.Match(h) != got {
			t.Fatalf("List and Pattern disagree on %q vs %q", pattern, h)
		}
		var tab Table[bool]
		tab.Add(pattern, true)
		if _, ok := tab.Lookup(h); ok != got {
			t.Fatalf("Table and Pattern disagree on %q vs %q", pattern, h)
		}
		// Parsing the normal form yields the same pattern.
		p2, err := Parse(p.String())
		if err != nil || p2.String() != p.String() {
			t.Fatalf("normal form %q of %q does not re-parse to itself: %q, %v", p, pattern, p2, err)
		}
		switch p.Kind() {
		case Glob:
			if want := naiveGlob(p.String(), unmapped(h)); got != want {
				t.Fatalf("glob %q on %q = %v, reference says %v", p, h, got, want)
			}
		case Exact:
			if want := unmapped(h) == p.String(); got != want {
				t.Fatalf("exact %q on %q = %v, want %v", p, h, got, want)
			}
		}
	})
}

// FuzzTable checks the indexed Table against a plain first-match scan.
func FuzzTable(f *testing.F) {
	f.Add("*.example.com,api.example.com,*.com,*", "api.example.com")
	f.Add("*x.a.com,*.a.com,a.*,10.0.0.0/8,*", "yx.a.com")
	f.Add("*.b.a.com,*.a.com,*b.a.com", "c.b.a.com")
	f.Add("*.com,*.example.com", "www.example.com")
	f.Add("10.0.0.0/8,10.*,10.1.2.3", "::ffff:10.1.2.3")
	f.Fuzz(func(t *testing.T, list, rawHost string) {
		h, err := host.Normalize(rawHost)
		if err != nil {
			return
		}
		var tab Table[int]
		var pats []Pattern
		for i, raw := range strings.Split(list, ",") {
			if i == 8 {
				break
			}
			p, err := Parse(raw)
			if err != nil {
				continue
			}
			if added, _ := tab.Add(raw, i); !added {
				continue
			}
			pats = append(pats, p)
		}
		want, wantOK := -1, false
		for _, p := range pats { // exact first
			if p.Kind() == Exact && p.Match(h) {
				want, wantOK = indexOf(list, p.Raw()), true
				break
			}
		}
		if !wantOK {
			for _, p := range pats {
				if p.Kind() != Exact && p.Match(h) {
					want, wantOK = indexOf(list, p.Raw()), true
					break
				}
			}
		}
		got, ok := tab.Lookup(h)
		if ok != wantOK || (ok && got != want) {
			t.Fatalf("Lookup(%q) in %q = %d, %v; want %d, %v", h, list, got, ok, want, wantOK)
		}
	})
}

// indexOf returns the position of the first element equal to raw.
func indexOf(list, raw string) int {
	for i, s := range strings.Split(list, ",") {
		if s == raw {
			return i
		}
	}
	return -1
}
