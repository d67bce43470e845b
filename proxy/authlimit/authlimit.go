// Package authlimit slows down credential guessing: it counts failed
// authentications per source address with a token bucket, and once a
// source's bucket is empty its attempts are refused without the
// credentials being checked, so guessing gains nothing until it refills.
// Successful authentications cost nothing.
package authlimit

import (
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Defaults for Options fields left zero.
const (
	DefaultRate       = 1.0   // failures forgiven per second
	DefaultBurst      = 20    // failures allowed in a row
	DefaultMaxSources = 16384 // sources tracked; the least recently seen is forgotten
	// LogEvery is how often a limited source is logged at most.
	LogEvery = time.Minute
)

// Options configure a Limiter.
type Options struct {
	Rate       float64 // failures forgiven per second; negative disables the limiter
	Burst      int     // failures allowed before the first refusal
	MaxSources int     // bound on tracked sources (memory)
	Logger     *slog.Logger
	What       string // what is being guessed, for the log: "proxy credentials"
}

// Limiter tracks failures per source. A nil *Limiter limits nothing.
type Limiter struct {
	rate    rate.Limit
	burst   int
	log     *slog.Logger
	what    string
	sources *lru.Cache[netip.Prefix, *source]
	mu      sync.Mutex // serialises creating a source
}

type source struct {
	lim     *rate.Limiter
	mu      sync.Mutex
	lastLog time.Time
	refused int // since lastLog
}

// New returns a Limiter, or nil when o.Rate is negative.
func New(o Options) *Limiter {
	if o.Rate < 0 {
		return nil
	}
	if o.Rate == 0 {
		o.Rate = DefaultRate
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.MaxSources <= 0 {
		o.MaxSources = DefaultMaxSources
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.What == "" {
		o.What = "credentials"
	}
	c, _ := lru.New[netip.Prefix, *source](o.MaxSources) // only fails for size <= 0
	return &Limiter{rate: rate.Limit(o.Rate), burst: o.Burst, log: o.Logger, what: o.What, sources: c}
}

// Key is the source a remote address ("ip:port", as in
// http.Request.RemoteAddr) counts against: the IPv4 address, or the /64 of
// an IPv6 one, since one host usually holds a whole /64.
func Key(remoteAddr string) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Prefix{}, false
	}
	ip := ap.Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.WithZone("").Prefix(bits)
	return p, true
}

func (l *Limiter) get(k netip.Prefix) *source {
	if s, ok := l.sources.Get(k); ok {
		return s
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sources.Get(k); ok {
		return s
	}
	s := &source{lim: rate.NewLimiter(l.rate, l.burst)}
	l.sources.Add(k, s)
	return s
}

// Limited reports whether remoteAddr has used up its failures; if so the
// caller refuses the attempt without checking it and may tell the client to
// retry after the returned duration. The first refusal of a source in each
// LogEvery window is logged, with the source and the count refused since
// the last line; never anything the client sent.
func (l *Limiter) Limited(remoteAddr string) (retryAfter time.Duration, limited bool) {
	if l == nil {
		return 0, false
	}
	k, ok := Key(remoteAddr)
	if !ok {
		return 0, false
	}
	s, ok := l.sources.Peek(k)
	if !ok {
		return 0, false // never failed (or forgotten): full bucket
	}
	now := time.Now()
	tokens := s.lim.TokensAt(now)
	if tokens >= 1 {
		return 0, false
	}
	retryAfter = time.Duration(math.Ceil((1 - tokens) / float64(l.rate) * float64(time.Second)))
	s.mu.Lock()
	s.refused++
	var n int
	if now.Sub(s.lastLog) >= LogEvery {
		n, s.refused, s.lastLog = s.refused, 0, now
	}
	s.mu.Unlock()
	if n > 0 {
		l.log.Warn("too many failed authentications; refusing attempts without checking them",
			"what", l.what, "source", k.String(), "refused", n, "retry_after", retryAfter.Round(time.Second))
	}
	return retryAfter, true
}

// Failed records a failed authentication from remoteAddr.
func (l *Limiter) Failed(remoteAddr string) {
	if l == nil {
		return
	}
	if k, ok := Key(remoteAddr); ok {
		l.get(k).lim.Allow()
	}
}
