package authlimit

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLimiter(t *testing.T) {
	var logs bytes.Buffer
	l := New(Options{Rate: 0.001, Burst: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil)), What: "test"})
	const a, b = "192.0.2.1:1000", "192.0.2.2:1000"
	for i := 0; i < 3; i++ {
		if _, limited := l.Limited(a); limited {
			t.Fatalf("limited after %d failures, burst 3", i)
		}
		l.Failed(a)
	}
	for i := 0; i < 5; i++ {
		ra, limited := l.Limited("192.0.2.1:2000") // another port, same source
		if !limited || ra <= 0 {
			t.Fatalf("after the burst: limited %v, retry after %v", limited, ra)
		}
	}
	if _, limited := l.Limited(b); limited {
		t.Errorf("another source is limited too")
	}
	if n := strings.Count(logs.String(), "too many failed"); n != 1 {
		t.Errorf("%d log lines for one window, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "source=192.0.2.1/32") || !strings.Contains(logs.String(), "refused=1") {
		t.Errorf("log line lacks the source or count: %s", logs.String())
	}
}

func TestIPv6PerSlash64(t *testing.T) {
	l := New(Options{Rate: 0.001, Burst: 1})
	l.Failed("[2001:db8::1]:1")
	if _, limited := l.Limited("[2001:db8::ffff]:2"); !limited {
		t.Errorf("another address in the same /64 is not limited")
	}
	if _, limited := l.Limited("[2001:db8:0:1::1]:2"); limited {
		t.Errorf("another /64 is limited")
	}
}

func TestBoundedAndDisabled(t *testing.T) {
	l := New(Options{Rate: 0.001, Burst: 1, MaxSources: 2})
	l.Failed("192.0.2.1:1")
	l.Failed("192.0.2.2:1")
	l.Failed("192.0.2.3:1")
	if n := l.sources.Len(); n != 2 {
		t.Errorf("%d sources tracked, bound 2", n)
	}
	var off *Limiter = New(Options{Rate: -1})
	off.Failed("192.0.2.1:1")
	if _, limited := off.Limited("192.0.2.1:1"); limited {
		t.Errorf("a disabled limiter limits")
	}
}
