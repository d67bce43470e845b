package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBucketsCoverEveryLatencyOnce(t *testing.T) {
	// Every bucket's range starts right after the previous one ends, and
	// bucketOf maps both ends of a range back to it.
	prev := uint64(0)
	for i := range numBuckets - 1 {
		up := bucketUpper(i)
		if i > 0 && up <= prev {
			t.Fatalf("bucket %d ends at %d, not after bucket %d (%d)", i, up, i-1, prev)
		}
		lo := uint64(0)
		if i > 0 {
			lo = prev + 1
		}
		if bucketOf(lo) != i || bucketOf(up) != i {
			t.Fatalf("bucket %d is [%d, %d] but bucketOf gives %d and %d", i, lo, up, bucketOf(lo), bucketOf(up))
		}
		if lo >= subBuckets && float64(up-lo+1)/float64(lo) > 1.0/subBuckets+1e-9 {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/%d of its start", i, lo, up, subBuckets)
		}
		prev = up
	}
	if got := bucketOf(1 << 62); got != numBuckets-1 {
		t.Fatalf("huge latency lands in bucket %d, want the last (%d)", got, numBuckets-1)
	}
}

func TestHistogramPercentile(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		rec  []time.Duration
		p    float64
		want time.Duration // the bucket's upper bound, within 1/subBuckets above the true value
	}{
		{"empty", nil, 50, 0},
		{"one value is every percentile", []time.Duration{7 * ms}, 99, 7 * ms},
		{"median of three", []time.Duration{1 * ms, 2 * ms, 300 * ms}, 50, 2 * ms},
		{"p99 of a hundred is the 99th", hundred(ms), 99, 99 * ms},
		{"p100 is the max", hundred(ms), 100, 100 * ms},
		{"exact below 32 µs", []time.Duration{5 * time.Microsecond, 31 * time.Microsecond}, 100, 31 * time.Microsecond},
		{"negative counts as zero", []time.Duration{-time.Second}, 50, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, d := range tt.rec {
				h.Record(d)
			}
			if got := h.Count(); got != uint64(len(tt.rec)) {
				t.Fatalf("count %d, want %d", got, len(tt.rec))
			}
			got := h.Percentile(tt.p)
			if got < tt.want || float64(got-tt.want) > float64(tt.want)/subBuckets {
				t.Fatalf("p%g = %s, want %s (at most 1/%d above)", tt.p, got, tt.want, subBuckets)
			}
		})
	}
}

func hundred(unit time.Duration) []time.Duration {
	out := make([]time.Duration, 100)
	for i := range out {
		out[len(out)-1-i] = time.Duration(i+1) * unit // recorded in reverse: order must not matter
	}
	return out
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{checkErr("status 502", "bad gateway"), "status 502"},
		{fmt.Errorf("websocket close reply: %w", checkErr("wrong echo", "x")), "wrong echo"},
		{fmt.Errorf("%w after 30s: %v", errTimeout, context.DeadlineExceeded), "timeout"},
		{&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, "connection reset"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "connection refused"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, "no free local port"},
		{fmt.Errorf("reading response body: %w", io.ErrUnexpectedEOF), "unexpected EOF"},
		{errors.New("something new"), "other"},
	}
	for _, tt := range tests {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestErrorCounts(t *testing.T) {
	var e ErrorCounts
	e.Add("http", checkErr("status 502", "first"))
	e.Add("http", checkErr("status 502", "second"))
	e.Add("wss", checkErr("wrong echo", "only"))
	if e.Total() != 3 {
		t.Fatalf("total %d", e.Total())
	}
	got := e.Lines()
	want := []ErrorLine{{"http: status 502", 2, "status 502: first"}, {"wss: wrong echo", 1, "wrong echo: only"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lines %v, want %v", got, want)
	}
}

func TestVersionTracker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tr := NewVersionTracker(t0, 2*time.Second)
	if v := tr.Next(); v != 1 {
		t.Fatalf("next version %d, want 1", v)
	}
	tr.Wrote(1, at(10))
	tr.Wrote(2, at(20))
	tests := []struct {
		name       string
		header     string
		sent, done float64
		class      string // "" means accepted
	}{
		{"old version before the rewrite", "0", 9, 9.1, ""},
		{"old version within the grace", "0", 11.9, 12, ""},
		{"old version past the grace", "0", 12.5, 12.6, "stale version"},
		{"new version", "1", 10.3, 10.4, ""},
		{"version 1 is stale once 2 is due", "1", 23, 23.1, "stale version"},
		{"newest", "2", 23, 23.5, ""},
		{"never written", "3", 23, 23.1, "bad version"},
		{"missing header", "", 5, 5.1, "bad version"},
	}
	for _, tt := range tests {
		err := tr.Check(tt.header, at(tt.sent), at(tt.done))
		got := ""
		if err != nil {
			got = classify(err)
		}
		if got != tt.class {
			t.Errorf("%s: got %q (%v), want %q", tt.name, got, err, tt.class)
		}
	}
	r := tr.Report(at(30))
	if r.Reloads != 2 || len(r.Unseen) != 0 || len(r.Lags) != 2 {
		t.Fatalf("report %+v", r)
	}
	if r.Lags[0] != 400*time.Millisecond || r.Lags[1] != 3500*time.Millisecond {
		t.Fatalf("lags %v, want [400ms 3.5s]", r.Lags)
	}

	tr.Wrote(3, at(25))
	tr.Wrote(4, at(29))
	if r := tr.Report(at(30)); fmt.Sprint(r.Unseen) != "[3]" {
		t.Fatalf("unseen %v, want [3] (4 was written within the grace of the end)", r.Unseen)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 217
go_memstats_heap_inuse_bytes 2.5952256e+07
go_memstats_heap_alloc_bytes 1
process_resident_memory_bytes 5.7e+07
outbound_active_tunnels{mode="intercept"} 40
outbound_active_tunnels{mode="raw"} 2 1700000000000
outbound_requests_total{step="by host",status="200"} 99
`
	s, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := Sample{Goroutines: 217, HeapInuse: 25952256, RSS: 57e6, Tunnels: 42}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	if _, err := parseMetrics(strings.NewReader("process_resident_memory_bytes 1\n")); err == nil {
		t.Fatal("metrics without go_goroutines parsed")
	}
	if _, err := parseMetrics(strings.NewReader("go_goroutines many\n")); err == nil {
		t.Fatal("a non-numeric value parsed")
	}
}

func TestLimitsSettled(t *testing.T) {
	l := Limits{GoroutineSlack: 10, HeapFactor: 1.5, HeapSlack: 1 << 20}
	base := Sample{Goroutines: 100, HeapInuse: 10 << 20}
	tests := []struct {
		name  string
		after Sample
		want  int // reasons
	}{
		{"back to baseline", Sample{Goroutines: 100, HeapInuse: 10 << 20}, 0},
		{"at the limits", Sample{Goroutines: 110, HeapInuse: 16 << 20}, 0},
		{"goroutines leaked", Sample{Goroutines: 111, HeapInuse: 10 << 20}, 1},
		{"heap grew", Sample{Goroutines: 100, HeapInuse: 16<<20 + 1}, 1},
		{"both", Sample{Goroutines: 500, HeapInuse: 100 << 20}, 2},
	}
	for _, tt := range tests {
		if got := l.settled(base, tt.after); len(got) != tt.want {
			t.Errorf("%s: %v, want %d reasons", tt.name, got, tt.want)
		}
	}
}

func TestClientKindMixesEveryInstance(t *testing.T) {
	const instances, clients = 100, 1000
	seen := map[int]map[string]int{}
	for i := range clients {
		in := i % instances
		if seen[in] == nil {
			seen[in] = map[string]int{}
		}
		seen[in][clientKind(i, instances)]++
	}
	for in, m := range seen {
		if m["http"] != 4 || m["https"] != 3 || m["h2"] != 1 || m["ws"] != 1 || m["wss"] != 1 {
			t.Fatalf("instance %d gets %v, want every slot of the mix", in, m)
		}
	}
}

func TestWebSocketFrames(t *testing.T) {
	for _, size := range []int{0, 5, 125, 126, 2000, maxWSSize} {
		for _, mask := range []bool{false, true} {
			payload := bytes.Repeat([]byte{'x'}, size)
			var buf bytes.Buffer
			if err := writeFrame(&buf, opText, payload, mask); err != nil {
				t.Fatal(err)
			}
			if mask && size > 0 && bytes.Contains(buf.Bytes(), payload) {
				t.Fatalf("size %d: masked frame carries the payload in clear", size)
			}
			op, got, masked, err := readFrame(&buf)
			if err != nil || op != opText || masked != mask || !bytes.Equal(got, payload) || buf.Len() != 0 {
				t.Fatalf("size %d mask %v: op %d masked %v %d bytes, %d left, %v", size, mask, op, masked, len(got), buf.Len(), err)
			}
		}
	}
	if err := writeFrame(io.Discard, opText, make([]byte, maxWSSize+1), true); err == nil {
		t.Fatal("oversized frame written")
	}
	if _, _, _, err := readFrame(bytes.NewReader([]byte{0x01, 0x00})); err == nil {
		t.Fatal("fragmented frame accepted")
	}
	// RFC 6455 §1.3's example key and accept value.
	if got := wsAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept %q", got)
	}
}

func TestSetVersion(t *testing.T) {
	src, err := os.ReadFile("../../testdata/soak/policy.js")
	if err != nil {
		t.Fatal(err)
	}
	b, err := setVersion(src, 42)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("const VERSION = \"42\";\n")) || bytes.Contains(b, []byte(`const VERSION = "0";`)) {
		t.Fatalf("version not rewritten:\n%s", b)
	}
	if _, err := setVersion([]byte("const V = 1;"), 1); err == nil {
		t.Fatal("a script without a VERSION line was accepted")
	}
}
