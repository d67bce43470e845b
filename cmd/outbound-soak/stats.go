package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Latencies are kept in a fixed log-linear histogram rather than a slice:
// a 10-minute soak at a few thousand requests per second would otherwise
// hold millions of samples. subBuckets per power of two gives a relative
// error under 1/subBuckets (about 3 %), plenty for p50 and p99.
const (
	subBits    = 5
	subBuckets = 1 << subBits
	maxOctaves = 32 // microseconds up to 2^36, far past any timeout
	numBuckets = subBuckets + maxOctaves*subBuckets
)

// Histogram counts latencies in microseconds. It is safe for concurrent use.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
}

// bucketOf maps a latency in microseconds to its bucket: exact below
// subBuckets, then subBuckets buckets per power of two.
func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	shift := bits.Len64(us) - subBits - 1 // us>>shift is in [subBuckets, 2*subBuckets)
	i := subBuckets + shift*subBuckets + int(us>>shift) - subBuckets
	return min(i, numBuckets-1)
}

// bucketUpper is the largest latency (in microseconds) bucket i holds, so
// a percentile never under-reports.
func bucketUpper(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	shift := (i - subBuckets) / subBuckets
	mant := uint64((i-subBuckets)%subBuckets + subBuckets)
	return (mant+1)<<shift - 1
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	h.counts[bucketOf(uint64(max(d.Microseconds(), 0)))].Add(1)
}

// Count is the number of recorded latencies.
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100), as
// the upper bound of its bucket, or 0 when nothing was recorded.
func (h *Histogram) Percentile(p float64) time.Duration {
	total := h.Count()
	if total == 0 {
		return 0
	}
	rank := uint64(p / 100 * float64(total))
	if float64(rank) < p/100*float64(total) {
		rank++
	}
	rank = min(max(rank, 1), total)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(bucketUpper(i)) * time.Microsecond
		}
	}
	return 0 // not reached
}

// ErrorCounts counts unexpected errors by kind and class, keeping the first
// message of each so the report says what actually happened.
type ErrorCounts struct {
	mu    sync.Mutex
	n     map[string]int
	first map[string]string
	total atomic.Int64
}

// Add counts err under kind (the traffic kind: http, https, ws, …).
func (e *ErrorCounts) Add(kind string, err error) {
	key := kind + ": " + classify(err)
	e.total.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n, e.first = map[string]int{}, map[string]string{}
	}
	e.n[key]++
	if _, ok := e.first[key]; !ok {
		e.first[key] = err.Error()
	}
}

// Total is the number of errors counted so far.
func (e *ErrorCounts) Total() int64 { return e.total.Load() }

// ErrorLine is one row of the error report.
type ErrorLine struct {
	Key   string
	Count int
	First string
}

// Lines returns the counts, most frequent first.
func (e *ErrorCounts) Lines() []ErrorLine {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ErrorLine
	for k, n := range e.n {
		out = append(out, ErrorLine{k, n, e.first[k]})
	}
	slices.SortFunc(out, func(a, b ErrorLine) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out
}

// checkError is a response that arrived but was wrong: its class is part
// of the error, so that "status 502" and "status 403" count apart.
type checkError struct {
	class string
	msg   string
}

func (e *checkError) Error() string { return e.class + ": " + e.msg }

func checkErr(class, format string, args ...any) error {
	return &checkError{class: class, msg: fmt.Sprintf(format, args...)}
}

// errTimeout is a request or round trip that took longer than the
// per-request timeout.
var errTimeout = errors.New("timed out")

// classify reduces an error to a short class for counting: the check that
// failed, or the kind of transport failure.
func classify(err error) string {
	var ce *checkError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return ce.class
	case errors.Is(err, errTimeout), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free local port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "unexpected EOF"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// versionWrite is one rewrite of the policy script.
type versionWrite struct {
	v  int
	at time.Time
}

// VersionTracker knows which script versions were written when, checks
// the version each response carries, and measures how long each version
// took to show up.
type VersionTracker struct {
	grace time.Duration

	mu        sync.Mutex
	writes    []versionWrite // in order, v = index
	firstSeen map[int]time.Time
}

// NewVersionTracker starts at version 0, written at start. A response that
// began more than grace after a newer version was written, yet carries an
// older one, is stale.
func NewVersionTracker(start time.Time, grace time.Duration) *VersionTracker {
	return &VersionTracker{grace: grace, writes: []versionWrite{{0, start}}, firstSeen: map[int]time.Time{0: start}}
}

// Next returns the version to write next.
func (t *VersionTracker) Next() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.writes)
}

// Wrote records that version v is on disk as of at.
func (t *VersionTracker) Wrote(v int, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v != len(t.writes) {
		panic(fmt.Sprintf("version %d written out of order (next is %d)", v, len(t.writes)))
	}
	t.writes = append(t.writes, versionWrite{v, at})
}

// Check judges the version header of a response to a request sent at
// sent and completed at done.
func (t *VersionTracker) Check(header string, sent, done time.Time) error {
	v, err := strconv.Atoi(header)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil || v < 0 || v >= len(t.writes) {
		return checkErr("bad version", "response carries script version %q; versions 0..%d were written", header, len(t.writes)-1)
	}
	if f, ok := t.firstSeen[v]; !ok || done.Before(f) {
		t.firstSeen[v] = done
	}
	// The newest version written at least grace before the request was sent
	// must be served, or a newer one.
	for i := len(t.writes) - 1; i > v; i-- {
		if t.writes[i].at.Add(t.grace).Before(sent) {
			return checkErr("stale version", "response carries script version %d, but version %d was written %s before the request",
				v, i, sent.Sub(t.writes[i].at).Round(time.Millisecond))
		}
	}
	return nil
}

// ReloadReport is what the tracker learnt about reloads.
type ReloadReport struct {
	Reloads int             // versions written after the first
	Lags    []time.Duration // write to first response carrying it, sorted
	Unseen  []int           // versions written at least grace before end but never served
}

// Report summarises the reloads, as of end (the end of the load).
func (t *VersionTracker) Report(end time.Time) ReloadReport {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := ReloadReport{Reloads: len(t.writes) - 1}
	for _, w := range t.writes[1:] {
		f, ok := t.firstSeen[w.v]
		switch {
		case ok:
			r.Lags = append(r.Lags, f.Sub(w.at))
		case w.at.Add(t.grace).Before(end):
			r.Unseen = append(r.Unseen, w.v)
		}
	}
	slices.Sort(r.Lags)
	return r
}

// Sample is one reading of outbound's /metrics.
type Sample struct {
	At         time.Time
	Goroutines float64
	HeapInuse  float64 // bytes
	RSS        float64 // bytes
	Tunnels    float64 // open CONNECT tunnels, all modes
}

// parseMetrics reads the series a soak watches from Prometheus text format.
// Only these few are needed, so this reads lines rather than pulling in a
// full exposition-format parser.
func parseMetrics(r io.Reader) (Sample, error) {
	var s Sample
	found := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		series := name
		if i := strings.IndexByte(name, '{'); i >= 0 {
			series = name[:i]
			// Labels may hold spaces; the value follows the closing brace.
			j := strings.LastIndexByte(line, '}')
			if j < 0 {
				continue
			}
			rest = strings.TrimSpace(line[j+1:])
		}
		fields := strings.Fields(rest) // value [timestamp]
		if len(fields) == 0 {
			continue
		}
		var dst *float64
		switch series {
		case "go_goroutines":
			dst = &s.Goroutines
		case "go_memstats_heap_inuse_bytes":
			dst = &s.HeapInuse
		case "process_resident_memory_bytes":
			dst = &s.RSS
		case "outbound_active_tunnels":
			dst = &s.Tunnels
		default:
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return s, fmt.Errorf("metrics: bad value in %q: %w", line, err)
		}
		*dst += v // tunnels are summed over their labels
		found[series] = true
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("metrics: reading: %w", err)
	}
	for _, want := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes"} {
		if !found[want] {
			return s, fmt.Errorf("metrics: no %s series", want)
		}
	}
	return s, nil
}

// Limits say how far goroutines and heap may stay above the baseline once
// the load has stopped.
type Limits struct {
	GoroutineSlack int     // goroutines above baseline
	HeapFactor     float64 // heap may be baseline × this …
	HeapSlack      float64 // … plus this many bytes
}

// settled reports why after is not back to baseline, or nil if it is.
func (l Limits) settled(base, after Sample) []string {
	var why []string
	if after.Goroutines > base.Goroutines+float64(l.GoroutineSlack) {
		why = append(why, fmt.Sprintf("goroutines after the load %.0f > baseline %.0f + %d",
			after.Goroutines, base.Goroutines, l.GoroutineSlack))
	}
	if limit := base.HeapInuse*l.HeapFactor + l.HeapSlack; after.HeapInuse > limit {
		why = append(why, fmt.Sprintf("heap in use after the load %s > baseline %s × %.2g + %s",
			mib(after.HeapInuse), mib(base.HeapInuse), l.HeapFactor, mib(l.HeapSlack)))
	}
	return why
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }
