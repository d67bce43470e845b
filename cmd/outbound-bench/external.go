package main

// hey, an outside load generator. Users and peers measure outbound with a
// tool like it, so the keep-alive scenarios also drive their targets with
// hey, interleaved the same way, and report its numbers beside the
// harness's own, with the proxies' CPU per request from /proc over the
// very same runs.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// heyVersion is what `make bench` installs when hey is missing.
const heyVersion = "github.com/rakyll/hey@v0.1.5"

// findHey returns the hey binary to use: given if set, else hey on PATH or
// in GOPATH/bin. "" with a nil error means none was found.
func findHey(given string) (string, error) {
	if given != "" {
		p, err := exec.LookPath(given)
		if err != nil {
			return "", fmt.Errorf("-hey %s: %w", given, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("hey"); err == nil {
		return p, nil
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "hey")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", nil
}

// heyRun measures t with hey: an unmeasured warm-up run, then dur at conc
// closed-loop workers (hey keeps connections alive), reading the proxy's
// CPU time just before and just after.
func heyRun(ctx context.Context, bin string, t Target, conc int, warmup, dur time.Duration) (Stats, error) {
	if err := checkLoopback(t); err != nil {
		return Stats{}, err
	}
	if len(t.Proxies) > 1 || t.NewConnPerRequest {
		return Stats{}, fmt.Errorf("target %s: hey drives one proxy with keep-alive only", t.Name)
	}
	args := []string{"-c", strconv.Itoa(conc), "-disable-compression", "-disable-redirects"}
	if len(t.Proxies) == 1 {
		args = append(args, "-x", t.Proxies[0].String())
	}
	if warmup > 0 {
		if _, err := heyExec(ctx, bin, append(args, "-z", warmup.String(), t.URL)); err != nil {
			return Stats{}, fmt.Errorf("hey warm-up of %s: %w", t.Name, err)
		}
	}
	var cpu0 time.Duration
	cpuErr := errors.New("no PID")
	if t.PID != 0 {
		cpu0, cpuErr = readCPU(t.PID)
	}
	out, err := heyExec(ctx, bin, append(args, "-z", dur.String(), t.URL))
	if err != nil {
		return Stats{}, fmt.Errorf("hey on %s: %w", t.Name, err)
	}
	s, err := parseHey(out)
	if err != nil {
		return Stats{}, fmt.Errorf("hey on %s: %w", t.Name, err)
	}
	if cpuErr == nil {
		if cpu1, err := readCPU(t.PID); err == nil {
			s.ProxyCPU = cpu1 - cpu0
		}
	}
	if s.Requests > 0 {
		s.CPUPerReq = s.ProxyCPU / time.Duration(s.Requests)
	}
	return s, nil
}

func heyExec(ctx context.Context, bin string, args []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

var (
	heyTotal  = regexp.MustCompile(`(?m)^\s*Total:\s+([0-9.]+) secs`)
	heyPct    = regexp.MustCompile(`(?m)^\s*(\d+)%+ in ([0-9.]+) secs`) // hey prints "99%% in"
	heyStatus = regexp.MustCompile(`(?m)^\s*\[(\d+)\]\s+(\d+) responses`)
	heyErrors = regexp.MustCompile(`(?m)^\s*\[(\d+)\]\s+(.+)$`)
)

// parseHey reads hey's summary: responses with status 200 are requests,
// anything else (other statuses, transport errors) is an error.
func parseHey(out []byte) (Stats, error) {
	var s Stats
	m := heyTotal.FindSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("no total time in hey's output: %q", truncate(out, 300))
	}
	s.Elapsed, _ = time.ParseDuration(string(m[1]) + "s")
	for _, m := range heyPct.FindAllSubmatch(out, -1) {
		lat, _ := time.ParseDuration(string(m[2]) + "s")
		switch string(m[1]) {
		case "50":
			s.P50 = lat
		case "99":
			s.P99 = lat
		}
	}
	status, errs, _ := strings.Cut(string(out), "Error distribution:")
	for _, m := range heyStatus.FindAllStringSubmatch(status, -1) {
		n, _ := strconv.Atoi(m[2])
		if m[1] == "200" {
			s.Requests += n
		} else {
			s.Errors += n
			if s.FirstError == "" {
				s.FirstError = "status " + m[1]
			}
		}
	}
	for _, m := range heyErrors.FindAllStringSubmatch(errs, -1) {
		n, _ := strconv.Atoi(m[1])
		s.Errors += n
		if s.FirstError == "" {
			s.FirstError = m[2]
		}
	}
	if s.Elapsed > 0 {
		s.RPS = float64(s.Requests) / s.Elapsed.Seconds()
	}
	return s, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// mergeHey adds up hey's rounds. hey prints percentiles, not latencies,
// so the merged p50 is the median round's and the p99 the worst round's.
func mergeHey(runs []Stats) Stats {
	var s Stats
	var p50s []time.Duration
	for _, r := range runs {
		s.Requests += r.Requests
		s.Errors += r.Errors
		s.Elapsed += r.Elapsed
		s.ProxyCPU += r.ProxyCPU
		if s.FirstError == "" {
			s.FirstError = r.FirstError
		}
		p50s = append(p50s, r.P50)
		s.P99 = max(s.P99, r.P99)
	}
	if len(p50s) > 0 {
		slices.Sort(p50s)
		s.P50 = p50s[len(p50s)/2]
	}
	if s.Elapsed > 0 {
		s.RPS = float64(s.Requests) / s.Elapsed.Seconds()
	}
	if s.Requests > 0 {
		s.CPUPerReq = s.ProxyCPU / time.Duration(s.Requests)
	}
	return s
}

// InterleaveHey is Interleave with hey as the load generator.
func InterleaveHey(ctx context.Context, bin string, targets []Target, conc, rounds int, warmup, dur time.Duration) ([]Stats, error) {
	return interleave(ctx, targets, rounds, func(t Target) (Stats, error) {
		return heyRun(ctx, bin, t, conc, warmup, dur/time.Duration(rounds))
	}, mergeHey)
}

// heyCells measures targets with hey at every concurrency level, adds the
// rows (named "hey: …"), checks targets[1]'s req/s against targets[0]'s
// (what, at least want×), and returns the stats by concurrency. It returns
// nil when no hey is available, after noting so.
func (b *bench) heyCells(ctx context.Context, s *Scenario, targets []Target, what string, want float64) (map[int][]Stats, error) {
	if b.hey == "" {
		s.note("no outside load generator: hey not found (make bench installs it: go install %s)", heyVersion)
		return nil, nil
	}
	named := make([]Target, len(targets))
	for i, t := range targets {
		named[i] = t
		named[i].Name = "hey: " + t.Name
	}
	out := map[int][]Stats{}
	for _, c := range b.opts.concurrency {
		stats, err := InterleaveHey(ctx, b.hey, named, c, b.opts.rounds, b.opts.warmup, b.opts.duration)
		if err != nil {
			return out, err
		}
		s.addRows(named, c, stats, 0)
		out[c] = stats
		r := stats[1].RPS / stats[0].RPS
		s.check(fmt.Sprintf("hey: %s, conc %d", what, c), r, ratio(r), fmt.Sprintf("≥ %.1f×", want), r >= want)
	}
	s.note("rows marked hey: the same targets driven by hey (%s), interleaved the same way; hey prints percentiles only, so their p50 is the median round's and their p99 the worst round's", heyVersion)
	return out, nil
}
