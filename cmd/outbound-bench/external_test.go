package main

import (
	"os"
	"testing"
	"time"
)

// Outputs of hey v0.1.5: a run against a local server, and one against a
// port nobody listens on.
func TestParseHey(t *testing.T) {
	ok, err := os.ReadFile("testdata/hey-ok.txt")
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseHey(ok)
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 356 || s.Errors != 0 || s.Elapsed != 1031100*time.Microsecond ||
		s.P50 != 4300*time.Microsecond || s.P99 != 250*time.Millisecond {
		t.Errorf("parsed %+v", s)
	}
	if s.RPS < 345 || s.RPS > 346 {
		t.Errorf("req/s %.1f", s.RPS)
	}
	refused, err := os.ReadFile("testdata/hey-refused.txt")
	if err != nil {
		t.Fatal(err)
	}
	s, err = parseHey(refused)
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 0 || s.Errors != 3921 || s.FirstError == "" {
		t.Errorf("parsed %+v", s)
	}
	if _, err := parseHey([]byte("hey: flag provided but not defined")); err == nil {
		t.Error("nonsense parsed")
	}
	m := mergeHey([]Stats{
		{Requests: 100, Elapsed: time.Second, P50: 2 * time.Millisecond, P99: 9 * time.Millisecond, ProxyCPU: 10 * time.Millisecond},
		{Requests: 300, Elapsed: time.Second, P50: 1 * time.Millisecond, P99: 4 * time.Millisecond, ProxyCPU: 30 * time.Millisecond},
		{Requests: 200, Elapsed: time.Second, P50: 3 * time.Millisecond, P99: 5 * time.Millisecond, ProxyCPU: 20 * time.Millisecond},
	})
	if m.Requests != 600 || m.RPS != 200 || m.P50 != 2*time.Millisecond || m.P99 != 9*time.Millisecond || m.CPUPerReq != 100*time.Microsecond {
		t.Errorf("merged %+v", m)
	}
}
