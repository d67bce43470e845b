package host

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	long64 := strings.Repeat("a", 64)
	name253 := strings.Repeat(long63+".", 3) + strings.Repeat("b", 61) // 3*64+61 = 253
	name254 := name253 + "c"
	tests := []struct {
		in, want string // want "" means an error is expected
	}{
		// names
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"example.com...", "example.com"},
		{"EXAMPLE.com..", "example.com"},
		{"localhost", "localhost"},
		{"a", "a"},
		{"_dmarc.example.com", "_dmarc.example.com"},
		{"r3---sn-apo3qvuoxuxbt-j5pe.googlevideo.com", "r3---sn-apo3qvuoxuxbt-j5pe.googlevideo.com"},
		{"1password.com", "1password.com"},
		{"123.example", "123.example"},
		{"example.0x", ""}, // ends in a number: must be IPv4, is not
		{"example.123", ""},
		{"a.0xg", "a.0xg"}, // not a number, so a name
		{long63 + ".com", long63 + ".com"},
		{long64 + ".com", ""},
		{name253, name253},
		{name253 + ".", name253},
		{name254, ""},
		// IDN
		{"bücher.de", "xn--bcher-kva.de"},
		{"BÜCHER.de", "xn--bcher-kva.de"},
		{"xn--bcher-kva.de", "xn--bcher-kva.de"},
		{"XN--BCHER-KVA.de", "xn--bcher-kva.de"},
		{"faß.de", "xn--fa-hia.de"}, // non-transitional: ß kept
		{"例え.テスト", "xn--r8jz45g.xn--zckzah"},
		{"ｅｘａｍｐｌｅ.com", "example.com"}, // width folding
		{"example。com", "example.com"}, // ideographic full stop
		{"example.com。", "example.com"},
		{"xn--abc-.com", ""},           // bad punycode
		{"xn--ls8h.la", "xn--ls8h.la"}, // emoji domain: valid punycode decodes
		{"xn--example.com", ""},
		{"ex\u200dample.com", ""}, // ZWJ outside a valid context
		{"\u0627b.com", ""},       // bidi rule
		// IPv4 and its legacy spellings
		{"127.0.0.1", "127.0.0.1"},
		{"127.0.0.1.", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"0x7f.0.0.1", "127.0.0.1"},
		{"0X7F.0.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"017700000001", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0177.0.0.01", "127.0.0.1"},
		{"00000177.0.0.1", "127.0.0.1"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"0.0.0.0", "0.0.0.0"},
		{"255.255.255.255", "255.255.255.255"},
		{"4294967295", "255.255.255.255"},
		{"4294967296", ""},
		{"256.0.0.1", ""},
		{"1.2.3.256", ""},
		{"1.2.65536", ""},
		{"1.2.65535", "1.2.255.255"},
		{"1.16777215", "1.255.255.255"},
		{"1.2.3.4.5", ""},
		{"1..2.3", ""},
		{"08.0.0.1", ""}, // not octal
		{"0x1g.1", ""},   // last label "1" is numeric, so IPv4, and 0x1g is no number
		{"169.254.169.254", "169.254.169.254"},
		{"١٢٧.0.0.1", ""},          // Arabic-Indic digits are not ASCII digits
		{"１２７.0.0.1", "127.0.0.1"}, // fullwidth digits fold to ASCII first
		// IPv6
		{"::1", "::1"},
		{"[::1]", "::1"},
		{"[0:0:0:0:0:0:0:1]", "::1"},
		{"2001:DB8::1", "2001:db8::1"},
		{"[2001:0db8:0000:0000:0000:0000:0000:0001]", "2001:db8::1"},
		{"[::ffff:127.0.0.1]", "::ffff:127.0.0.1"},
		{"::ffff:7f00:1", "::ffff:127.0.0.1"},
		{"[fe80::1%25eth0]", ""},
		{"fe80::1%eth0", ""},
		{"[::1", ""},
		{"[[::1]]", ""},
		{"[[x]]", ""},
		{"[]", ""},
		{"[127.0.0.1]", ""},
		{"[example.com]", ""},
		{"[::1]:80", ""},
		// junk
		{"", ""},
		{".", ""},
		{"...", ""},
		{".example.com", ""},
		{"a..b", ""},
		{"exa mple.com", ""},
		{" example.com", ""},
		{"example.com ", ""},
		{"example.com\t", ""},
		{"exa\x00mple.com", ""},
		{"exa\nmple.com", ""},
		{"exa\x7fmple.com", ""},
		{"example%2ecom", ""},
		{"%65xample.com", ""},
		{"exa\\mple.com", ""},
		{"user@example.com", ""},
		{"user:pass@example.com", ""},
		{"example.com:80", ""},
		{"example.com/path", ""},
		{"example.com?q", ""},
		{"example.com#f", ""},
		{"*.example.com", ""},
		{"exa\"mple.com", ""},
		{"exa'mple.com", ""},
		{"exa<mple.com", ""},
		{"exa,mple.com", ""},
		{"example\u00a0.com", ""}, // NBSP maps to space
		{"example\u2028.com", ""},
		{"\xff\xfe.com", ""},                          // invalid UTF-8
		{"exa\uff05mple.com", ""},                     // fullwidth % maps to %
		{"exa\uff20mple.com", ""},                     // fullwidth @
		{"exa\u2215mple.com", "xn--example-ef0d.com"}, // a homoglyph, but only another name once punycoded
		{"example\ufe6b.com", ""},                     // small @
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("Normalize(%q) = %q, want error", tt.in, got)
			} else if !errors.Is(err, ErrInvalid) {
				t.Errorf("Normalize(%q) error %v does not wrap ErrInvalid", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Normalize(%q) error: %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if again, err := Normalize(got); err != nil || again != got {
			t.Errorf("Normalize(Normalize(%q)) = %q, %v; not idempotent", tt.in, again, err)
		}
	}
}

func TestNormalizeErrorNamesInput(t *testing.T) {
	_, err := Normalize("bad host")
	if err == nil || !strings.Contains(err.Error(), `"bad host"`) {
		t.Fatalf("error %v does not quote the input", err)
	}
}

func TestSplitHostPort(t *testing.T) {
	tests := []struct {
		in, def  string
		wantHost string // "" means error
		wantPort int
	}{
		{"example.com:443", "", "example.com", 443},
		{"Example.COM.:8080", "", "example.com", 8080},
		{"example.com", "80", "example.com", 80},
		{"example.com:", "80", "example.com", 80},
		{"example.com", "", "", 0},
		{"example.com:", "", "", 0},
		{"[::1]:443", "", "::1", 443},
		{"[::1]", "443", "::1", 443},
		{"[::ffff:127.0.0.1]:80", "", "::ffff:127.0.0.1", 80},
		{"::1:443", "", "", 0},
		{"::1", "80", "", 0},
		{"[::1]443", "", "", 0},
		{"[::1", "80", "", 0},
		{"0x7f.1:22", "", "127.0.0.1", 22},
		{"2130706433:80", "", "127.0.0.1", 80},
		{"bücher.de:443", "", "xn--bcher-kva.de", 443},
		{"example.com:0", "", "", 0},
		{"example.com:1", "", "example.com", 1},
		{"example.com:65535", "", "example.com", 65535},
		{"example.com:65536", "", "", 0},
		{"example.com:99999", "", "", 0},
		{"example.com:-1", "", "", 0},
		{"example.com:+80", "", "", 0},
		{"example.com: 80", "", "", 0},
		{"example.com:80 ", "", "", 0},
		{"example.com:0x50", "", "", 0},
		{"example.com:000080", "", "", 0},
		{"example.com:080", "", "example.com", 80},
		{"example.com:80:80", "", "", 0},
		{"example.com", "abc", "", 0},
		{":80", "", "", 0},
		{"user@example.com:80", "", "", 0},
		{"exa mple.com:80", "", "", 0},
		{"", "80", "", 0},
		{"[[::1]]:80", "", "", 0},
	}
	for _, tt := range tests {
		h, p, err := SplitHostPort(tt.in, tt.def)
		if tt.wantHost == "" {
			if err == nil {
				t.Errorf("SplitHostPort(%q, %q) = %q, %d; want error", tt.in, tt.def, h, p)
			}
			continue
		}
		if err != nil {
			t.Errorf("SplitHostPort(%q, %q) error: %v", tt.in, tt.def, err)
			continue
		}
		if h != tt.wantHost || p != tt.wantPort {
			t.Errorf("SplitHostPort(%q, %q) = %q, %d; want %q, %d", tt.in, tt.def, h, p, tt.wantHost, tt.wantPort)
		}
	}
}

func TestLabel(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Example", "example"},
		{"bücher", "xn--bcher-kva"},
		{"123", "123"}, // a label alone is never an IP
		{"", ""},
		{"a.b", ""},
		{"a。b", ""},
		{"a b", ""},
		{"a*", ""},
		{strings.Repeat("x", 64), ""},
	}
	for _, tt := range tests {
		got, err := Label(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("Label(%q) = %q, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Label(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"example.com", "Example.COM.", "bücher.de", "xn--bcher-kva.de", "127.1",
		"0x7f.0.0.1", "2130706433", "0177.0.0.1", "[::1]", "::ffff:127.0.0.1",
		"[[x]]", "a..b", "exa mple", "%2e", "a\\b", "u@h", "[fe80::1%eth0]",
		"例え.テスト", "ｅｘａｍｐｌｅ.com", "example。com。", "xn--", "xn--a.xn--b",
		"1.2.3.4.5", "0x", "4294967296", "\x00", "\u200d", "ß.de", "ẞ.de",
		strings.Repeat("a", 64), strings.Repeat("a.", 130), "١٢٧.0.0.1",
		"1.0x", "0x.0x", "a.1", "xn--ls8h.la", "Ⅻ.com", "ﬀ.com", "[0::]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if out == "" {
			t.Fatalf("Normalize(%q) returned empty without error", in)
		}
		if strings.HasSuffix(out, ".") || strings.ContainsAny(out, "[]%@\\/ *") {
			t.Fatalf("Normalize(%q) = %q has forbidden characters", in, out)
		}
		if strings.ToLower(out) != out {
			t.Fatalf("Normalize(%q) = %q has upper case", in, out)
		}
		for i := 0; i < len(out); i++ {
			if out[i] >= 0x80 || out[i] <= 0x20 {
				t.Fatalf("Normalize(%q) = %q is not printable ASCII", in, out)
			}
		}
		again, err := Normalize(out)
		if err != nil || again != out {
			t.Fatalf("not idempotent: Normalize(%q) = %q, Normalize(%q) = %q, %v", in, out, out, again, err)
		}
		// A canonical host that is not IPv6 must survive a host:port round trip.
		hp := out + ":443"
		if strings.Contains(out, ":") {
			hp = "[" + out + "]:443"
		}
		h, p, err := SplitHostPort(hp, "")
		if err != nil || h != out || p != 443 {
			t.Fatalf("SplitHostPort(%q) = %q, %d, %v", hp, h, p, err)
		}
	})
}

func BenchmarkNormalizeASCII(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Normalize("api.github.com"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestIsLocalhost(t *testing.T) {
	for h, want := range map[string]bool{
		"localhost":         true,
		"api.localhost":     true,
		"a.b.localhost":     true,
		"localhost.example": false,
		"notlocalhost":      false,
		"xlocalhost":        false,
		"127.0.0.1":         false,
		"::1":               false,
		"":                  false,
		// Not canonical: Normalize first.
		"LOCALHOST":  false,
		"localhost.": false,
	} {
		if got := IsLocalhost(h); got != want {
			t.Errorf("IsLocalhost(%q) = %v, want %v", h, got, want)
		}
	}
}
