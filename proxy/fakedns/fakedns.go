// Package fakedns answers DNS for a jail with the fake-IP technique: every
// name a jailed process looks up gets an address from a private pool, and
// the address maps back to the name when the process connects to it. The
// real resolution of the name happens later, on outbound's side, where
// --resolve, --connect-to and the private-network guard apply.
//
// It owns the pool and the DNS wire format (parsing queries, building
// answers). It never sends a query anywhere.
package fakedns

import (
	"container/list"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/outbound-dev/outbound/internal/host"
)

// TTL is the time-to-live of every answer, in seconds. It is short so that
// a client's cache does not outlive a pool entry by much; the pool is large
// enough that an address is reused only after ~100,000 other names.
const TTL = 60

// Pool hands out addresses from a prefix, one per name, least recently
// used first when it is full. Safe for concurrent use.
type Pool struct {
	first netip.Addr // first address handed out
	size  int        // how many addresses there are from first

	mu     sync.Mutex
	next   int // addresses handed out so far, up to size
	byName map[string]*list.Element
	byAddr map[netip.Addr]*list.Element
	lru    *list.List // of *entry, most recently used at the front
}

type entry struct {
	name string
	addr netip.Addr
}

// NewPool makes a pool of the IPv4 addresses of prefix from first on.
func NewPool(prefix netip.Prefix, first netip.Addr) (*Pool, error) {
	prefix = prefix.Masked()
	if !prefix.Addr().Is4() || !first.Is4() || !prefix.Contains(first) {
		return nil, fmt.Errorf("fakedns: pool %s from %s: want an IPv4 prefix that holds the first address", prefix, first)
	}
	total := uint64(1) << (32 - prefix.Bits())
	offset := uint64(u32(first) - u32(prefix.Addr()))
	size := total - offset
	if prefix.Bits() < 32 { // leave the prefix's last address (broadcast) out
		size--
	}
	if size < 1 {
		return nil, fmt.Errorf("fakedns: pool %s from %s is empty", prefix, first)
	}
	return &Pool{
		first: first, size: int(size),
		byName: map[string]*list.Element{}, byAddr: map[netip.Addr]*list.Element{}, lru: list.New(),
	}, nil
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func from32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Contains reports whether a is an address the pool hands out.
func (p *Pool) Contains(a netip.Addr) bool {
	a = a.Unmap()
	if !a.Is4() {
		return false
	}
	d := u32(a) - u32(p.first)
	return u32(a) >= u32(p.first) && int64(d) < int64(p.size)
}

// Addr returns the address of the normalised name, handing out a new one
// (the least recently used, once all are out) for a name not seen yet.
func (p *Pool) Addr(name string) netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if el, ok := p.byName[name]; ok {
		p.lru.MoveToFront(el)
		return el.Value.(*entry).addr
	}
	var e *entry
	if p.next < p.size {
		e = &entry{addr: from32(u32(p.first) + uint32(p.next))}
		p.next++
	} else {
		el := p.lru.Back()
		e = el.Value.(*entry)
		p.lru.Remove(el)
		delete(p.byName, e.name)
		delete(p.byAddr, e.addr)
	}
	e.name = name
	el := p.lru.PushFront(e)
	p.byName[name] = el
	p.byAddr[e.addr] = el
	return e.addr
}

// Name returns the name an address was handed out for.
func (p *Pool) Name(a netip.Addr) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	el, ok := p.byAddr[a.Unmap()]
	if !ok {
		return "", false
	}
	p.lru.MoveToFront(el)
	return el.Value.(*entry).name, true
}

// ErrNotQuery is returned for a message that is not a DNS query at all; it
// gets no answer.
var ErrNotQuery = errors.New("fakedns: not a DNS query")

// Answer builds the response to one DNS query message:
//   - A for a name: an address from the pool (localhost: 127.0.0.1, the
//     jail's own loopback; an IPv4 literal: itself);
//   - PTR for a pool address: its name;
//   - any other type (AAAA, HTTPS, MX, ...): an empty answer, so clients
//     use the pool's IPv4 address and never learn a real one;
//   - a name that is not a valid host name: NXDOMAIN; a malformed or
//     unsupported query: FORMERR or NOTIMP.
func (p *Pool) Answer(query []byte) ([]byte, error) {
	var parser dnsmessage.Parser
	hdr, err := parser.Start(query)
	if err != nil || hdr.Response {
		return nil, ErrNotQuery
	}
	questions, err := parser.AllQuestions()
	res := dnsmessage.Header{ID: hdr.ID, Response: true, OpCode: hdr.OpCode, RecursionDesired: hdr.RecursionDesired, RecursionAvailable: true}
	switch {
	case err != nil || len(questions) != 1:
		res.RCode = dnsmessage.RCodeFormatError
		return build(res, nil, nil)
	case hdr.OpCode != 0:
		res.RCode = dnsmessage.RCodeNotImplemented
		return build(res, nil, nil)
	}
	q := questions[0]
	if q.Class != dnsmessage.ClassINET {
		res.RCode = dnsmessage.RCodeNotImplemented
		return build(res, &q, nil)
	}
	res.Authoritative = true
	raw := strings.TrimSuffix(q.Name.String(), ".")
	if q.Type == dnsmessage.TypePTR {
		if name, ok := p.reverse(raw); ok {
			return build(res, &q, func(b *dnsmessage.Builder, rh dnsmessage.ResourceHeader) error {
				n, err := dnsmessage.NewName(name + ".")
				if err != nil {
					return err
				}
				return b.PTRResource(rh, dnsmessage.PTRResource{PTR: n})
			})
		}
		res.RCode = dnsmessage.RCodeNameError
		return build(res, &q, nil)
	}
	name, err := host.Normalize(raw)
	if err != nil || name == "" {
		res.RCode = dnsmessage.RCodeNameError
		return build(res, &q, nil)
	}
	if q.Type != dnsmessage.TypeA {
		return build(res, &q, nil)
	}
	var addr netip.Addr
	if ip, err := netip.ParseAddr(name); err == nil {
		if !ip.Is4() {
			return build(res, &q, nil)
		}
		addr = ip
	} else if host.IsLocalhost(name) {
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	} else {
		addr = p.Addr(name)
	}
	return build(res, &q, func(b *dnsmessage.Builder, rh dnsmessage.ResourceHeader) error {
		return b.AResource(rh, dnsmessage.AResource{A: addr.As4()})
	})
}

// reverse maps "d.c.b.a.in-addr.arpa" of a pool address to its name.
func (p *Pool) reverse(qname string) (string, bool) {
	rest, ok := strings.CutSuffix(strings.ToLower(qname), ".in-addr.arpa")
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return "", false
	}
	a, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
	if err != nil {
		return "", false
	}
	return p.Name(a)
}

// build writes a response with q as its question and, when answer is set,
// one answer record for q's name.
func build(h dnsmessage.Header, q *dnsmessage.Question, answer func(*dnsmessage.Builder, dnsmessage.ResourceHeader) error) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 0, 128), h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if q != nil {
		if err := b.Question(*q); err != nil {
			return nil, err
		}
	}
	if q != nil && answer != nil {
		if err := b.StartAnswers(); err != nil {
			return nil, err
		}
		if err := answer(&b, dnsmessage.ResourceHeader{Name: q.Name, Type: q.Type, Class: q.Class, TTL: TTL}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}
