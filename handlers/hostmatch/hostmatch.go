// Package hostmatch owns host patterns: the globs, bare IPs and CIDR ranges
// of allowedHosts, deniedHosts and outboundByHost keys. It normalises and
// validates patterns the same way package host normalises hosts, compiles
// lists for lookup, and keeps the insertion order that outboundByHost needs.
// It does not decide policy; package chain does.
//
// Semantics (docs/policy.md "Glob patterns"):
//   - '*' matches any run of characters, dots and the empty run included;
//   - a pattern without '*' matches exactly;
//   - a CIDR entry matches IP-literal hosts inside the range;
//   - a bare IP entry matches that IP in any spelling (it is canonicalised).
//
// Hosts given to Match and Lookup must already be canonical (host.Normalize).
// An IPv4-mapped IPv6 host (::ffff:a.b.c.d) is matched as the IPv4 address it
// maps to, so that denying 127.0.0.1 also denies ::ffff:127.0.0.1.
package hostmatch

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/outbound-dev/outbound/internal/host"
)

// ErrBadPattern is wrapped by every error about an invalid pattern.
var ErrBadPattern = errors.New("invalid host pattern")

// Kind says how a pattern matches.
type Kind uint8

const (
	Exact Kind = iota // a canonical name or IP, compared as a string
	Glob              // contains '*'
	CIDR              // an IP range
)

// maxPattern bounds a pattern's length, stars included; no host is longer
// than 253 bytes, so a longer pattern could only be an attack on the matcher.
const maxPattern = 512

// Pattern is one compiled, normalised pattern.
type Pattern struct {
	raw    string
	norm   string
	kind   Kind
	prefix netip.Prefix // CIDR only
	// Glob only: the literal runs between stars, and whether the pattern
	// starts or ends with a star.
	segs        []string
	lead, trail bool
}

// Parse normalises and compiles one pattern.
func Parse(p string) (Pattern, error) {
	bad := func(format string, args ...any) (Pattern, error) {
		return Pattern{}, fmt.Errorf("%w %q: %s", ErrBadPattern, p, fmt.Sprintf(format, args...))
	}
	if len(p) > maxPattern {
		return bad("longer than %d bytes", maxPattern)
	}
	switch {
	case strings.IndexByte(p, '/') >= 0:
		pre, err := parseCIDR(p)
		if err != nil {
			return bad("%v", err)
		}
		return Pattern{raw: p, norm: pre.String(), kind: CIDR, prefix: pre}, nil
	case strings.IndexByte(p, '*') >= 0:
		norm, err := normalizeGlob(p)
		if err != nil {
			return bad("%v", err)
		}
		pat := Pattern{raw: p, norm: norm, kind: Glob}
		pat.lead = strings.HasPrefix(norm, "*")
		pat.trail = strings.HasSuffix(norm, "*")
		for s := range strings.SplitSeq(norm, "*") {
			if s != "" {
				pat.segs = append(pat.segs, s)
			}
		}
		return pat, nil
	default:
		h, err := host.Normalize(p)
		if err != nil {
			return bad("%v", err)
		}
		return Pattern{raw: p, norm: unmapped(h), kind: Exact}, nil
	}
}

// String returns the normalised pattern.
func (p Pattern) String() string { return p.norm }

// Raw returns the pattern as it was written.
func (p Pattern) Raw() string { return p.raw }

// Kind returns how the pattern matches.
func (p Pattern) Kind() Kind { return p.kind }

// Match reports whether the canonical host h matches p.
func (p Pattern) Match(h string) bool {
	h = unmapped(h)
	switch p.kind {
	case Exact:
		return h == p.norm
	case CIDR:
		a, ok := ipOf(h)
		return ok && p.prefix.Contains(a)
	default:
		return p.matchGlob(h)
	}
}

// ipOf parses a canonical host that is an IP literal, unmapped to IPv4.
func ipOf(h string) (netip.Addr, bool) {
	if !looksLikeIP(h) {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(h)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// matchGlob matches literal runs left to right. Taking the leftmost
// occurrence of each middle run is always safe for '*'-only globs, so this
// is linear in len(h) per run and never backtracks.
func (p *Pattern) matchGlob(h string) bool {
	segs := p.segs
	if len(segs) == 0 {
		return true // "*"
	}
	if !p.lead {
		if !strings.HasPrefix(h, segs[0]) {
			return false
		}
		h = h[len(segs[0]):]
		segs = segs[1:]
		if len(segs) == 0 {
			return h == "" || p.trail
		}
	}
	last := ""
	if !p.trail {
		last = segs[len(segs)-1]
		segs = segs[:len(segs)-1]
	}
	for _, s := range segs {
		i := strings.Index(h, s)
		if i < 0 {
			return false
		}
		h = h[i+len(s):]
	}
	if p.trail {
		return true
	}
	return strings.HasSuffix(h, last)
}

// normalizeGlob lowercases and punycodes the literal labels of a glob and
// validates the starred ones. A label holding '*' must be ASCII: a fragment
// of an IDN label has no punycode of its own.
func normalizeGlob(p string) (string, error) {
	p = strings.TrimRight(p, ".")
	if p == "" {
		return "", errors.New("no labels")
	}
	labels := strings.Split(p, ".")
	literal := 0
	for i, l := range labels {
		if strings.IndexByte(l, '*') < 0 {
			a, err := host.Label(l)
			if err != nil {
				return "", fmt.Errorf("label %d: %w", i+1, err)
			}
			labels[i] = a
			literal += len(a)
			continue
		}
		var b strings.Builder
		star := false
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case c == '*':
				if !star { // "**" is "*"
					b.WriteByte('*')
				}
				star = true
				continue
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			default:
				return "", fmt.Errorf("character %q not allowed in a label with '*'", c)
			}
			star = false
			b.WriteByte(c)
			literal++
		}
		labels[i] = b.String()
	}
	if literal > 253 {
		return "", errors.New("longer than a host can be")
	}
	norm := strings.Join(labels, ".")
	return norm, nil
}

// parseCIDR parses addr/bits where addr may be in any spelling host accepts.
func parseCIDR(p string) (netip.Prefix, error) {
	i := strings.IndexByte(p, '/')
	addrPart, bitsPart := p[:i], p[i+1:]
	h, err := host.Normalize(addrPart)
	if err != nil {
		return netip.Prefix{}, err
	}
	a, err := netip.ParseAddr(h)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("CIDR address %q is not an IP", addrPart)
	}
	if bitsPart == "" || len(bitsPart) > 3 || strings.TrimLeft(bitsPart, "0123456789") != "" {
		return netip.Prefix{}, fmt.Errorf("CIDR prefix length %q is not a number", bitsPart)
	}
	bits, _ := strconv.Atoi(bitsPart)
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	pre, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("CIDR prefix length %d out of range for %s", bits, a)
	}
	return pre, nil
}

// unmapped returns the IPv4 form of a canonical IPv4-mapped IPv6 host, and
// any other host unchanged. netip writes mapped addresses as ::ffff:a.b.c.d,
// so a prefix test suffices and nothing is allocated.
func unmapped(h string) string {
	if len(h) > 7 && h[:7] == "::ffff:" && strings.IndexByte(h[7:], '.') >= 0 {
		return h[7:]
	}
	return h
}

// looksLikeIP reports whether a canonical host is an IP literal: IPv6 has a
// colon, and a canonical name never ends in a numeric label.
func looksLikeIP(h string) bool {
	if strings.IndexByte(h, ':') >= 0 {
		return true
	}
	last := h[strings.LastIndexByte(h, '.')+1:]
	return last != "" && strings.TrimLeft(last, "0123456789") == ""
}
