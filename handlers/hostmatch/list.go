package hostmatch

import (
	"net/netip"
	"strings"
)

// List is a compiled allowedHosts or deniedHosts list. Exact names and IPs
// are found by one map lookup. Suffix globs ("*.example.com") are indexed by
// the whole labels they end in, so a miss costs a few map lookups rather than
// a scan; other globs and CIDRs are tried in order. A List is immutable once
// compiled and safe for concurrent use.
type List struct {
	patterns []Pattern
	exact    map[string]struct{}
	suffix   map[string][]*Pattern // whole-label suffix → suffix globs
	ordered  []*Pattern            // other globs and CIDRs, in list order
	cidrs    bool
	any      bool // a "*" entry: everything matches
}

// suffixKey returns the whole labels a suffix glob's host must end in: for
// "*x.example.com" that is "example.com". ok is false for other globs.
func suffixKey(p *Pattern) (string, bool) {
	if !p.lead || p.trail || len(p.segs) != 1 {
		return "", false
	}
	lit := p.segs[0]
	i := strings.IndexByte(lit, '.')
	if i < 0 || i == len(lit)-1 {
		return "", false
	}
	return lit[i+1:], true
}

// Compile parses every pattern. The error names the first bad pattern.
func Compile(patterns []string) (*List, error) {
	l := &List{exact: make(map[string]struct{}, len(patterns)), suffix: map[string][]*Pattern{}}
	l.patterns = make([]Pattern, 0, len(patterns))
	for _, raw := range patterns {
		p, err := Parse(raw)
		if err != nil {
			return nil, err
		}
		l.patterns = append(l.patterns, p)
	}
	for i := range l.patterns {
		p := &l.patterns[i]
		switch p.kind {
		case Exact:
			l.exact[p.norm] = struct{}{}
		case Glob:
			if len(p.segs) == 0 {
				l.any = true
			}
			if k, ok := suffixKey(p); ok {
				l.suffix[k] = append(l.suffix[k], p)
				continue
			}
			l.ordered = append(l.ordered, p)
		case CIDR:
			l.cidrs = true
			l.ordered = append(l.ordered, p)
		}
	}
	return l, nil
}

// Match reports whether the canonical host h matches any pattern.
func (l *List) Match(h string) bool {
	if l.any {
		return true
	}
	h = unmapped(h)
	if _, ok := l.exact[h]; ok {
		return true
	}
	if len(l.suffix) > 0 {
		for i := len(h) - 1; i >= 0; i-- {
			if h[i] != '.' {
				continue
			}
			for _, p := range l.suffix[h[i+1:]] {
				if p.matchGlob(h) {
					return true
				}
			}
		}
	}
	if len(l.ordered) == 0 {
		return false
	}
	var ip netip.Addr
	isIP := false
	if l.cidrs {
		ip, isIP = ipOf(h)
	}
	for _, p := range l.ordered {
		if p.kind == CIDR {
			if isIP && p.prefix.Contains(ip) {
				return true
			}
			continue
		}
		if p.matchGlob(h) {
			return true
		}
	}
	return false
}

// Len returns the number of patterns.
func (l *List) Len() int { return len(l.patterns) }

// Patterns returns the compiled patterns in list order.
func (l *List) Patterns() []Pattern { return l.patterns }

// Table maps patterns to values for outboundByHost: Lookup tries the exact
// key first, then the first glob or CIDR key in insertion order. When two
// keys normalise to the same pattern, the first one added wins. Suffix globs
// are indexed as in List; the index keeps insertion order by position.
// The zero Table is empty and ready to use; a Table must not be modified
// while it is being read.
type Table[V any] struct {
	exact   map[string]entry[V]
	ordered []entry[V]       // globs and CIDRs, in insertion order
	suffix  map[string][]int // whole-label suffix → positions in ordered, ascending
	other   []int            // positions of unindexed entries, ascending
	cidrs   bool
}

type entry[V any] struct {
	pat Pattern
	val V
}

// Add parses pattern and appends it with its value. It reports false,
// without error, when an equal pattern is already in the table.
func (t *Table[V]) Add(pattern string, v V) (bool, error) {
	p, err := Parse(pattern)
	if err != nil {
		return false, err
	}
	if p.kind == Exact {
		if t.exact == nil {
			t.exact = make(map[string]entry[V])
		}
		if _, dup := t.exact[p.norm]; dup {
			return false, nil
		}
		t.exact[p.norm] = entry[V]{p, v}
		return true, nil
	}
	for _, e := range t.ordered {
		if e.pat.norm == p.norm {
			return false, nil
		}
	}
	pos := len(t.ordered)
	t.ordered = append(t.ordered, entry[V]{p, v})
	if k, ok := suffixKey(&p); ok {
		if t.suffix == nil {
			t.suffix = make(map[string][]int)
		}
		t.suffix[k] = append(t.suffix[k], pos)
	} else {
		t.other = append(t.other, pos)
		t.cidrs = t.cidrs || p.kind == CIDR
	}
	return true, nil
}

// Lookup returns the value of the pattern that decides the canonical host h.
func (t *Table[V]) Lookup(h string) (V, bool) {
	h = unmapped(h)
	if e, ok := t.exact[h]; ok {
		return e.val, true
	}
	best := len(t.ordered) // the earliest matching position so far
	if len(t.suffix) > 0 {
		for i := len(h) - 1; i >= 0; i-- {
			if h[i] != '.' {
				continue
			}
			for _, pos := range t.suffix[h[i+1:]] {
				if pos >= best {
					break
				}
				if t.ordered[pos].pat.matchGlob(h) {
					best = pos
					break
				}
			}
		}
	}
	var ip netip.Addr
	isIP := false
	if t.cidrs {
		ip, isIP = ipOf(h)
	}
	for _, pos := range t.other {
		if pos >= best {
			break
		}
		p := &t.ordered[pos].pat
		if p.kind == CIDR {
			if isIP && p.prefix.Contains(ip) {
				best = pos
				break
			}
			continue
		}
		if p.matchGlob(h) {
			best = pos
			break
		}
	}
	if best < len(t.ordered) {
		return t.ordered[best].val, true
	}
	var zero V
	return zero, false
}

// Len returns the number of distinct patterns.
func (t *Table[V]) Len() int { return len(t.exact) + len(t.ordered) }

// Normalize returns the normalised form of a pattern, which is the identity
// of a key: two patterns with the same normal form are the same key.
func Normalize(pattern string) (string, error) {
	p, err := Parse(pattern)
	if err != nil {
		return "", err
	}
	return p.norm, nil
}
