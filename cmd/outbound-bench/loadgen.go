package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"
)

// Target is one thing the load generator drives: a URL fetched either
// directly or through a proxy. The generator only ever connects to loopback
// addresses: the proxy if there is one, else the URL's host.
type Target struct {
	Name string
	URL  string
	// Proxies are the proxy URLs (with credentials, if any); worker i uses
	// Proxies[i%len]. Empty means a direct connection.
	Proxies []*url.URL
	// RootCAs verify the server certificate seen by the client: the
	// upstream's for direct HTTPS, the proxy's interception CA otherwise.
	RootCAs *x509.CertPool
	// NewConnPerRequest disables keep-alive, so every request pays for a
	// TCP connect, a CONNECT and a TLS handshake.
	NewConnPerRequest bool
	// Check decides whether a response counts as a success; nil means any
	// 200. The body has been read in full when it runs.
	Check func(resp *http.Response) error
	// Observe, if set, sees every successful response as it completes.
	Observe func(resp *http.Response, done time.Time)
	// PID, if set, is the proxy's process: its CPU time over the measured
	// part is recorded. CPU per request is much less sensitive to other
	// load on a shared machine than requests per second.
	PID int
}

// Stats summarises one measured run (or several merged).
type Stats struct {
	Requests int           `json:"requests"`
	Errors   int           `json:"errors"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	RPS      float64       `json:"rps"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	// Unfinished counts requests still in flight when the time was up: not
	// failures, but a sign that latency is of the order of the run.
	Unfinished int `json:"unfinished"`
	// FirstError is one error message, to say why requests failed.
	FirstError string `json:"first_error,omitempty"`
	// ProxyCPU is the CPU time the proxy process used while measured, and
	// CPUPerReq that divided by the successful requests (0 when unknown).
	ProxyCPU  time.Duration `json:"proxy_cpu_ns,omitempty"`
	CPUPerReq time.Duration `json:"proxy_cpu_per_request_ns,omitempty"`

	latencies []time.Duration
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, or 0 for an empty slice.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Merge adds the runs together: counts and time add, percentiles are
// recomputed over all latencies.
func Merge(runs ...Stats) Stats {
	var s Stats
	for _, r := range runs {
		s.Requests += r.Requests
		s.Errors += r.Errors
		s.Unfinished += r.Unfinished
		s.Elapsed += r.Elapsed
		s.ProxyCPU += r.ProxyCPU
		s.latencies = append(s.latencies, r.latencies...)
		if s.FirstError == "" {
			s.FirstError = r.FirstError
		}
	}
	s.finish()
	return s
}

func (s *Stats) finish() {
	slices.Sort(s.latencies)
	s.P50 = Percentile(s.latencies, 50)
	s.P99 = Percentile(s.latencies, 99)
	if s.Elapsed > 0 {
		s.RPS = float64(s.Requests) / s.Elapsed.Seconds()
	}
	if s.Requests > 0 {
		s.CPUPerReq = s.ProxyCPU / time.Duration(s.Requests)
	}
}

// checkLoopback refuses a target that would send load anywhere but this
// machine. A proxied URL may name any host: the proxy maps it (with
// --connect-to) and the proxy itself must be on loopback.
func checkLoopback(t Target) error {
	hosts := []string{}
	for _, p := range t.Proxies {
		hosts = append(hosts, p.Hostname())
	}
	if len(t.Proxies) == 0 {
		u, err := url.Parse(t.URL)
		if err != nil {
			return fmt.Errorf("target %s: bad URL %q: %w", t.Name, t.URL, err)
		}
		hosts = append(hosts, u.Hostname())
	}
	for _, h := range hosts {
		ip := net.ParseIP(h)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("target %s: %q is not a loopback IP; the harness only loads this machine", t.Name, h)
		}
	}
	return nil
}

func (t Target) client(worker int, v *chainCache) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives:   t.NewConnPerRequest,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
		TLSClientConfig:     clientTLS(v),
		ForceAttemptHTTP2:   false, // HTTP/1.1 through every proxy, as the baseline speaks
	}
	if len(t.Proxies) > 0 {
		tr.Proxy = http.ProxyURL(t.Proxies[worker%len(t.Proxies)])
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// clientTLS is the load generator's TLS: cheap and fixed, because the
// generator shares the cores with the proxy and is not what is measured.
//   - X25519 only, which every proxy here accepts: Go's default would also
//     generate an ML-KEM-768 key per handshake that the proxy then ignores.
//   - No session cache, so a new connection is always a full handshake.
//   - The chain is verified against roots once per distinct leaf and server
//     name, then remembered: every handshake still checks the server's
//     signature over it (CertificateVerify) and that the leaf is byte for
//     byte one that verified, but the generator does not redo the CA
//     signature check on every connection.
func clientTLS(v *chainCache) *tls.Config {
	c := &tls.Config{CurvePreferences: []tls.CurveID{tls.X25519}, ClientSessionCache: nil}
	if v != nil && v.roots != nil {
		c.InsecureSkipVerify = true // replaced by v.verify, which keeps the checks
		c.VerifyConnection = v.verify
	}
	return c
}

// chainCache remembers which (server name, leaf) pairs verified against roots.
type chainCache struct {
	roots *x509.CertPool
	mu    sync.Mutex
	ok    map[string]struct{}
}

func newChainCache(roots *x509.CertPool) *chainCache {
	return &chainCache{roots: roots, ok: map[string]struct{}{}}
}

func (v *chainCache) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	key := cs.ServerName + "\x00" + string(leaf.Raw)
	v.mu.Lock()
	_, seen := v.ok[key]
	v.mu.Unlock()
	if seen {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, DNSName: cs.ServerName}); err != nil {
		return fmt.Errorf("server certificate for %q: %w", cs.ServerName, err)
	}
	v.mu.Lock()
	v.ok[key] = struct{}{}
	v.mu.Unlock()
	return nil
}

// Run drives t with conc closed-loop workers: each sends a request, reads
// the whole answer, and sends the next. The first warmup is not recorded;
// then the run is measured for dur, or until ctx ends. Every worker has its
// own client, so keep-alive means one connection per worker.
func Run(ctx context.Context, t Target, conc int, warmup, dur time.Duration) (Stats, error) {
	if err := checkLoopback(t); err != nil {
		return Stats{}, err
	}
	if conc < 1 {
		return Stats{}, fmt.Errorf("target %s: concurrency %d < 1", t.Name, conc)
	}
	ctx, cancel := context.WithTimeout(ctx, warmup+dur)
	defer cancel()
	start := time.Now()
	measureFrom := start.Add(warmup)
	per := make([]Stats, conc)
	var wg sync.WaitGroup
	var cpu0 time.Duration
	cpuErr := errors.New("no PID")
	if t.PID != 0 {
		wg.Go(func() {
			select {
			case <-time.After(warmup):
				cpu0, cpuErr = readCPU(t.PID)
			case <-ctx.Done():
			}
		})
	}
	chains := newChainCache(t.RootCAs)
	for i := range conc {
		wg.Go(func() {
			c := t.client(i, chains)
			defer c.CloseIdleConnections()
			per[i] = worker(ctx, c, t, measureFrom)
		})
	}
	wg.Wait()
	end := time.Now()
	s := Merge(per...)
	s.Elapsed = end.Sub(measureFrom)
	if s.Elapsed < 0 {
		s.Elapsed = 0
	}
	if cpuErr == nil {
		if cpu1, err := readCPU(t.PID); err == nil {
			s.ProxyCPU = cpu1 - cpu0
		}
	}
	s.finish()
	return s, nil
}

func worker(ctx context.Context, c *http.Client, t Target, measureFrom time.Time) Stats {
	var s Stats
	for ctx.Err() == nil {
		t0 := time.Now()
		err := fetchOnce(ctx, c, t)
		done := time.Now()
		if ctx.Err() != nil { // cut off by the end of the run, not a failure
			// Counted even if it started in the warm-up: a proxy that
			// never answers within the run must not look merely idle.
			s.Unfinished++
			break
		}
		if t0.Before(measureFrom) {
			continue
		}
		if err != nil {
			s.Errors++
			if s.FirstError == "" {
				s.FirstError = err.Error()
			}
			continue
		}
		s.Requests++
		s.latencies = append(s.latencies, done.Sub(t0))
	}
	return s
}

func fetchOnce(ctx context.Context, c *http.Client, t Target) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	check := t.Check
	if check == nil {
		check = want200
	}
	if err := check(resp); err != nil {
		return err
	}
	if t.Observe != nil {
		t.Observe(resp, time.Now())
	}
	return nil
}

func want200(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// settle waits (at most 10 s) until a proxy has finished the work a run
// left it, such as requests that were cut off, so that the next target in
// the interleaving does not pay for it: until the process uses under a
// tenth of a core.
func settle(ctx context.Context, pid int) {
	const every = 200 * time.Millisecond
	for range 50 {
		c0, err := readCPU(pid)
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		c1, err := readCPU(pid)
		if err != nil || c1-c0 <= every/10 {
			return
		}
	}
}

// Interleave measures the targets in turn, rounds times each (A B A B), so
// that noise from the shared machine falls on all of them alike. Each
// target's share of the time is dur, split over the rounds.
func Interleave(ctx context.Context, targets []Target, conc, rounds int, warmup, dur time.Duration) ([]Stats, error) {
	return interleave(ctx, targets, rounds, func(t Target) (Stats, error) {
		return Run(ctx, t, conc, warmup, dur/time.Duration(rounds))
	}, func(runs []Stats) Stats { return Merge(runs...) })
}

// interleave runs every target in turn, rounds times, letting each proxy
// settle after its run, and merges each target's runs.
func interleave(ctx context.Context, targets []Target, rounds int, run func(Target) (Stats, error), merge func([]Stats) Stats) ([]Stats, error) {
	runs := make([][]Stats, len(targets))
	for range rounds {
		for i, t := range targets {
			s, err := run(t)
			if err != nil {
				return nil, err
			}
			if t.PID != 0 {
				settle(ctx, t.PID)
			}
			runs[i] = append(runs[i], s)
		}
	}
	out := make([]Stats, len(targets))
	for i := range runs {
		out[i] = merge(runs[i])
	}
	return out, ctx.Err()
}
