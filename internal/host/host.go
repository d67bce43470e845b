// Package host owns the one host model of outbound: turning a URL host, a
// CONNECT target or a pattern fragment into the canonical form that every
// policy comparison uses. It does not match patterns and knows no sockets.
//
// The canonical host is:
//   - a DNS name in lower case, IDN labels as punycode (UTS #46 lookup
//     mapping, non-transitional), every trailing dot stripped; or
//   - an IPv4 address in dotted-decimal, whatever legacy spelling it came in
//     (127.1, 0x7f.0.0.1, 0177.0.0.1, 2130706433); or
//   - an IPv6 address in RFC 5952 compressed form without brackets.
//
// An IPv4-mapped IPv6 address stays in its IPv6 form (::ffff:127.0.0.1): it
// is a different literal on the wire, and the matcher is what treats it as
// the IPv4 address it maps to when comparing against IP and CIDR entries.
package host

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Length limits of a DNS name (RFC 1035), after punycode.
const (
	maxLabel = 63
	maxName  = 253
)

// ErrInvalid is wrapped by every error that rejects a host.
var ErrInvalid = errors.New("invalid host")

// profile maps as browsers do for lookup (case folding, width folding,
// IDNA2008 validity, bidi rule) and verifies DNS lengths. STD3 rules are off
// so that underscores survive (they are common in real host names); the
// ASCII character set is enforced by validASCII afterwards instead. Hyphen
// checks are off because labels like "r3---sn-x" are in use.
var profile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.BidiRule(),
	idna.VerifyDNSLength(true),
	idna.StrictDomainName(false),
	idna.CheckHyphens(false),
)

func invalid(h, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s", ErrInvalid, h, fmt.Sprintf(format, args...))
}

// Normalize returns the canonical form of a bare host: no port, no userinfo,
// IPv6 optionally in brackets, any number of trailing dots.
func Normalize(h string) (string, error) {
	if h == "" {
		return "", invalid(h, "empty")
	}
	if h[0] == '[' {
		if len(h) < 2 || h[len(h)-1] != ']' {
			return "", invalid(h, "unterminated bracket")
		}
		a, err := parseIPv6(h[1 : len(h)-1])
		if err != nil {
			return "", invalid(h, "brackets hold no IPv6 address")
		}
		return a, nil
	}
	if strings.IndexByte(h, ':') >= 0 {
		a, err := parseIPv6(h)
		if err != nil {
			return "", invalid(h, "a colon outside an IPv6 address (ports are not part of a host)")
		}
		return a, nil
	}
	if err := rejectASCII(h); err != nil {
		return "", invalid(h, "%v", err)
	}
	if !utf8.ValidString(h) {
		return "", invalid(h, "not UTF-8")
	}
	name := strings.TrimRight(h, ".")
	if name == "" {
		return "", invalid(h, "no labels")
	}
	name, err := toASCII(name)
	if err != nil {
		return "", invalid(h, "%v", err)
	}
	if endsInNumber(name) {
		a, ok := parseIPv4(name)
		if !ok {
			return "", invalid(h, "looks like an IPv4 address but is not one")
		}
		return a, nil
	}
	return name, nil
}

// IsLocalhost reports whether h, a canonical host, is localhost or a name
// under it: loopback by definition (RFC 6761), never a DNS query.
func IsLocalhost(h string) bool { return h == "localhost" || strings.HasSuffix(h, ".localhost") }

// Label returns the canonical form of one DNS label (lower case, punycode).
// It is for pattern fragments, where a label is checked on its own; a label
// is never treated as an IP address.
func Label(l string) (string, error) {
	if l == "" {
		return "", invalid(l, "empty label")
	}
	if strings.IndexByte(l, '.') >= 0 {
		return "", invalid(l, "a label cannot contain a dot")
	}
	if err := rejectASCII(l); err != nil {
		return "", invalid(l, "%v", err)
	}
	if !utf8.ValidString(l) {
		return "", invalid(l, "not UTF-8")
	}
	a, err := toASCII(l)
	if err != nil {
		return "", invalid(l, "%v", err)
	}
	if strings.IndexByte(a, '.') >= 0 { // U+3002 and friends map to '.'
		return "", invalid(l, "a label cannot contain a dot")
	}
	return a, nil
}

// rejectASCII refuses the ASCII bytes that can never be in a host: controls,
// space, and URL/authority delimiters such as % \ @ / ? # [ ] :.
func rejectASCII(h string) error {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c >= 0x80 {
			continue // non-ASCII is judged by IDNA
		}
		if !asciiHostByte(c) && !(c >= 'A' && c <= 'Z') {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

// asciiHostByte reports whether c may appear in a canonical host.
func asciiHostByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
}

// toASCII lowercases and punycodes a name with no trailing dot. Plain
// ASCII names without xn-- labels take a fast path that allocates only when
// there is upper case to fold.
func toASCII(name string) (string, error) {
	if fast, ok := fastASCII(name); ok {
		return fast, checkLengths(fast)
	}
	a, err := profile.ToASCII(name)
	if err != nil {
		return "", fmt.Errorf("IDNA: %w", err)
	}
	a = strings.TrimRight(a, ".") // U+3002 etc. may have mapped to a trailing dot
	if a == "" {
		return "", errors.New("no labels")
	}
	for i := 0; i < len(a); i++ {
		if !asciiHostByte(a[i]) {
			return "", fmt.Errorf("character %q not allowed after IDNA mapping", a[i])
		}
	}
	return a, checkLengths(a)
}

// fastASCII lowercases name if it is plain ASCII that IDNA would leave alone.
func fastASCII(name string) (string, bool) {
	upper := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z':
			upper = true
		case asciiHostByte(c):
		default:
			return "", false
		}
	}
	if upper {
		name = strings.ToLower(name)
	}
	if strings.HasPrefix(name, "xn--") || strings.Contains(name, ".xn--") {
		return "", false // punycode must be validated
	}
	return name, true
}

func checkLengths(name string) error {
	if len(name) > maxName {
		return fmt.Errorf("name longer than %d bytes", maxName)
	}
	for l := range strings.SplitSeq(name, ".") {
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > maxLabel {
			return fmt.Errorf("label longer than %d bytes", maxLabel)
		}
	}
	return nil
}

func parseIPv6(s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", err
	}
	if !a.Is6() || a.Zone() != "" {
		return "", errors.New("not a zoneless IPv6 address")
	}
	return a.String(), nil
}

// endsInNumber reports whether the last label is numeric (decimal, or hex
// with 0x), which per the WHATWG URL standard makes the whole host an IPv4
// address or an error — never a domain name.
func endsInNumber(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	if isDigits(last) {
		return true
	}
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		for i := 2; i < len(last); i++ {
			if !isHex(last[i]) {
				return false
			}
		}
		return true
	}
	return false
}

// parseIPv4 implements the WHATWG IPv4 parser: up to four parts, each
// decimal, 0x-hex or 0-octal; the last part fills the remaining bytes.
func parseIPv4(name string) (string, bool) {
	parts := strings.Split(name, ".")
	if len(parts) > 4 {
		return "", false
	}
	nums := make([]uint64, len(parts))
	for i, p := range parts {
		n, ok := parseIPv4Number(p)
		if !ok {
			return "", false
		}
		nums[i] = n
	}
	for _, n := range nums[:len(nums)-1] {
		if n > 255 {
			return "", false
		}
	}
	last := nums[len(nums)-1]
	if last >= 1<<(8*(5-len(nums))) {
		return "", false
	}
	v := last
	for i, n := range nums[:len(nums)-1] {
		v += n << (8 * (3 - i))
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String(), true
}

func parseIPv4Number(p string) (uint64, bool) {
	if p == "" {
		return 0, false
	}
	base := 10
	switch {
	case len(p) >= 2 && (p[:2] == "0x" || p[:2] == "0X"):
		p, base = p[2:], 16
		if p == "" {
			return 0, true // "0x" is zero in the WHATWG parser
		}
	case len(p) >= 2 && p[0] == '0':
		p, base = p[1:], 8
	}
	// More than 32 bits never fits; bounding the length also bounds the work.
	if len(p) > 32 {
		return 0, false
	}
	n, err := strconv.ParseUint(p, base, 64)
	if err != nil || n > 0xffffffff {
		return 0, false
	}
	return n, true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// SplitHostPort splits "host:port" (IPv6 in brackets) and normalises the
// host. Without a port, or with an empty one, defaultPort is used; if that
// is empty too, a port is required. A port is 1..65535 in decimal.
func SplitHostPort(hostport, defaultPort string) (string, int, error) {
	var h, p string
	hasPort := false
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", 0, invalid(hostport, "unterminated bracket")
		}
		h, p = hostport[:end+1], hostport[end+1:]
		if p != "" {
			if p[0] != ':' {
				return "", 0, invalid(hostport, "junk after bracketed address")
			}
			p, hasPort = p[1:], true
		}
	} else {
		i := strings.IndexByte(hostport, ':')
		switch {
		case i < 0:
			h = hostport
		case strings.IndexByte(hostport[i+1:], ':') >= 0:
			return "", 0, invalid(hostport, "IPv6 address must be in brackets")
		default:
			h, p, hasPort = hostport[:i], hostport[i+1:], true
		}
	}
	if !hasPort || p == "" {
		if defaultPort == "" {
			return "", 0, invalid(hostport, "missing port")
		}
		p = defaultPort
	}
	port, err := parsePort(p)
	if err != nil {
		return "", 0, invalid(hostport, "%v", err)
	}
	n, err := Normalize(h)
	if err != nil {
		return "", 0, err
	}
	return n, port, nil
}

func parsePort(p string) (int, error) {
	if !isDigits(p) || len(p) > 5 {
		return 0, fmt.Errorf("port %q is not a decimal number", p)
	}
	n, _ := strconv.Atoi(p)
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d out of range 1..65535", n)
	}
	return n, nil
}
