package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"
)

// bench holds what the scenarios share: the upstream, the baseline, the
// optional mitmdump, and how to start outbound.
type bench struct {
	opts     options
	dir      string // the run's temp dir
	up       *Upstream
	baseline *child
	mitm     *mitm // nil when mitmdump is not installed
	outbin   string
	hey      string // the outside load generator; "" when there is none
	script   []byte // testdata/bench/inject.js
	started  []interface{ Stop() }

	shared     *outboundProc // scenarios 1-3
	sharedInst *url.URL
	sharedCA   *x509.CertPool
}

func (b *bench) startOutbound(ctx context.Context, name string) (*outboundProc, error) {
	dir := filepath.Join(b.dir, name)
	start := func() (*outboundProc, error) {
		return startOutbound(ctx, b.outbin, dir, b.opts.script, b.opts.logLevel, b.up)
	}
	if b.opts.cpuprofile != "" {
		start = func() (*outboundProc, error) {
			return startOutboundInProcess(ctx, dir, b.opts.script, b.opts.logLevel, b.up)
		}
	}
	o, err := start()
	if err != nil {
		return nil, err
	}
	b.started = append(b.started, o)
	return o, nil
}

// sharedOutbound is the outbound process (and one instance) scenarios 1–3 drive.
func (b *bench) sharedOutbound(ctx context.Context) (*outboundProc, *url.URL, error) {
	if b.shared == nil {
		o, err := b.startOutbound(ctx, "outbound-shared")
		if err != nil {
			return nil, nil, err
		}
		u, pool, err := o.NewInstance(ctx, "bench")
		if err != nil {
			return nil, nil, err
		}
		b.shared, b.sharedInst, b.sharedCA = o, u, pool
	}
	return b.shared, b.sharedInst, nil
}

func (b *bench) baselineURL() *url.URL { return &url.URL{Scheme: "http", Host: b.baseline.Addr} }

func (b *bench) mitmURL() *url.URL { return &url.URL{Scheme: "http", Host: b.mitm.Addr} }

func (b *bench) smallHTTP() string  { return "http://" + b.up.HTTPAddr + "/small" }
func (b *bench) smallHTTPS() string { return "https://" + upstreamHost + "/small" }

// cells measures the targets at every concurrency level, interleaved.
func (b *bench) cells(ctx context.Context, s *Scenario, targets []Target, ref int) (map[int][]Stats, error) {
	out := map[int][]Stats{}
	for _, c := range b.opts.concurrency {
		stats, err := Interleave(ctx, targets, c, b.opts.rounds, b.opts.warmup, b.opts.duration)
		if err != nil {
			return out, err
		}
		s.addRows(targets, c, stats, ref)
		out[c] = stats
	}
	return out, nil
}

// scenario1: HTTP keep-alive, small responses: outbound with the JS
// credential injection against the bare forwarder and mitmdump.
func (b *bench) scenario1(ctx context.Context, s *Scenario) error {
	_, inst, err := b.sharedOutbound(ctx)
	if err != nil {
		return err
	}
	targets := []Target{
		{Name: "baseline Go forwarder", URL: b.smallHTTP(), Proxies: []*url.URL{b.baselineURL()}, PID: b.baseline.PID()},
		{Name: "outbound + JS", URL: b.smallHTTP(), Proxies: []*url.URL{inst}, PID: b.shared.CPUPID()},
	}
	if b.mitm != nil {
		targets = append(targets, Target{Name: "mitmdump + addon", URL: b.smallHTTP(), Proxies: []*url.URL{b.mitmURL()}, PID: b.mitm.PID()})
	}
	s.Ref = "baseline"
	res, err := b.cells(ctx, s, targets, 0)
	if err != nil {
		return err
	}
	for _, c := range b.opts.concurrency {
		st := res[c]
		r := st[1].RPS / st[0].RPS
		s.check(fmt.Sprintf("req/s vs baseline, conc %d", c), r, ratio(r), "≥ 0.8×", r >= 0.8)
		if b.mitm != nil {
			r := st[1].RPS / st[2].RPS
			s.check(fmt.Sprintf("req/s vs mitmdump, conc %d", c), r, ratio(r), "≥ 15×", r >= 15)
		}
		if st[0].CPUPerReq > 0 && st[1].CPUPerReq > 0 {
			line := fmt.Sprintf("conc %d, proxy CPU per request: outbound %s, baseline %s (%s)", c,
				us(st[1].CPUPerReq), us(st[0].CPUPerReq), ratio(float64(st[1].CPUPerReq)/float64(st[0].CPUPerReq)))
			if b.mitm != nil && st[2].CPUPerReq > 0 {
				line += fmt.Sprintf(", mitmdump %s (%s outbound's)", us(st[2].CPUPerReq), ratio(float64(st[2].CPUPerReq)/float64(st[1].CPUPerReq)))
			}
			s.note("%s", line)
		}
		if c == 1 {
			checkAddedP99(s, "", st)
		}
	}
	ext, err := b.heyCells(ctx, s, targets[:2], "req/s vs baseline", 0.8)
	if err != nil {
		return err
	}
	for _, c := range b.opts.concurrency {
		st, ok := ext[c]
		if !ok {
			break
		}
		if st[0].CPUPerReq > 0 && st[1].CPUPerReq > 0 {
			cr := float64(st[1].CPUPerReq) / float64(st[0].CPUPerReq)
			s.check(fmt.Sprintf("hey: proxy CPU per request vs baseline, conc %d", c), cr,
				fmt.Sprintf("%s (%s vs %s)", ratio(cr), us(st[1].CPUPerReq), us(st[0].CPUPerReq)), "≤ 1.3×", cr <= 1.3)
		}
		if c == 1 {
			checkAddedP99(s, "hey: ", st)
		}
	}
	return nil
}

// checkAddedP99 checks the p99 latency outbound (st[1]) adds to the
// baseline (st[0]) at concurrency 1; prefix names the load generator.
func checkAddedP99(s *Scenario, prefix string, st []Stats) {
	added := st[1].P99 - st[0].P99
	s.check(prefix+"added p99 latency of the handler, conc 1", float64(added)/1e6, ms(added), "< 1 ms", added < time.Millisecond)
}

// scenario2: HTTPS through MITM with keep-alive, against the bare
// forwarder's plain HTTP (the forwarder does not intercept TLS).
func (b *bench) scenario2(ctx context.Context, s *Scenario) error {
	_, inst, err := b.sharedOutbound(ctx)
	if err != nil {
		return err
	}
	targets := []Target{
		{Name: "baseline Go forwarder (HTTP)", URL: b.smallHTTP(), Proxies: []*url.URL{b.baselineURL()}, PID: b.baseline.PID()},
		{Name: "outbound + JS (HTTPS MITM)", URL: b.smallHTTPS(), Proxies: []*url.URL{inst}, RootCAs: b.sharedCA, PID: b.shared.CPUPID()},
	}
	if b.mitm != nil {
		targets = append(targets, Target{Name: "mitmdump + addon (HTTPS MITM)", URL: "https://" + b.up.HTTPSAddr + "/small",
			Proxies: []*url.URL{b.mitmURL()}, RootCAs: b.mitm.CAPool, PID: b.mitm.PID()})
	}
	s.Ref = "baseline"
	res, err := b.cells(ctx, s, targets, 0)
	if err != nil {
		return err
	}
	for _, c := range b.opts.concurrency {
		r := res[c][1].RPS / res[c][0].RPS
		s.check(fmt.Sprintf("HTTPS req/s vs baseline HTTP, conc %d", c), r, ratio(r), "≥ 0.7×", r >= 0.7)
	}
	if _, err := b.heyCells(ctx, s, targets[:2], "HTTPS req/s vs baseline HTTP", 0.6); err != nil {
		return err
	}
	s.note("the load generator's TLS client is HTTP/1.1 and offers X25519 only (what every proxy here accepts), so it does not spend the shared cores on ML-KEM keys the proxy would ignore")
	s.note("mitmdump is driven at https://127.0.0.1:port (it intercepts any port); outbound intercepts port 443 only, so it maps %s:443 to the upstream with --connect-to", upstreamHost)
	return nil
}

// scenario3: HTTPS with a new client connection per request: TCP connect,
// CONNECT and a full TLS handshake with a leaf from the instance CA each time.
func (b *bench) scenario3(ctx context.Context, s *Scenario) error {
	_, inst, err := b.sharedOutbound(ctx)
	if err != nil {
		return err
	}
	targets := []Target{
		{Name: "outbound + JS (new TLS conn/req)", URL: b.smallHTTPS(), Proxies: []*url.URL{inst}, RootCAs: b.sharedCA, NewConnPerRequest: true, PID: b.shared.CPUPID()},
	}
	if b.mitm != nil {
		targets = append(targets, Target{Name: "mitmdump + addon (new TLS conn/req)", URL: "https://" + b.up.HTTPSAddr + "/small",
			Proxies: []*url.URL{b.mitmURL()}, RootCAs: b.mitm.CAPool, NewConnPerRequest: true, PID: b.mitm.PID()})
	}
	s.Ref = "outbound"
	res, err := b.cells(ctx, s, targets, 0)
	if err != nil {
		return err
	}
	best, bestC := 0.0, 0
	for _, c := range b.opts.concurrency {
		if res[c][0].RPS > best {
			best, bestC = res[c][0].RPS, c
		}
	}
	measured := fmt.Sprintf("%.0f/s", best)
	if cpu := res[bestC][0].CPUPerReq; cpu > 0 {
		measured += fmt.Sprintf(" (proxy CPU %s/conn)", ms(cpu))
	}
	s.check("new TLS connections/s (best concurrency)", best, measured, "≥ 1000/s", best >= 1000)
	for _, c := range b.opts.concurrency {
		if cpu := res[c][0].CPUPerReq; cpu > 0 {
			s.note("conc %d: %.0f new connections/s; outbound used %s of CPU per new connection and request, i.e. about %.0f connections/s per core it has to itself",
				c, res[c][0].RPS, ms(cpu), float64(time.Second)/float64(cpu))
		}
	}
	s.note("each request is a new TCP connection to the proxy and a full TLS handshake (no session cache, so no resumption); the client offers X25519 only, the key exchange the proxy picks anyway, to keep the load generator's own handshake cheap: it runs on the same 2 cores")
	return nil
}

// scenario4: a large download streamed through `fetch(request)`, against
// the same download straight from the upstream, and the proxy's RSS.
func (b *bench) scenario4(ctx context.Context, s *Scenario) error {
	o, err := b.startOutbound(ctx, "outbound-stream")
	if err != nil {
		return err
	}
	inst, _, err := o.NewInstance(ctx, "stream")
	if err != nil {
		return err
	}
	type path struct {
		name string
		c    *http.Client
		auth string // the credential, where no proxy injects it
	}
	client := func(proxy *url.URL) *http.Client {
		tr := &http.Transport{DisableCompression: true}
		if proxy != nil {
			tr.Proxy = http.ProxyURL(proxy)
		}
		return &http.Client{Transport: tr}
	}
	paths := []path{
		{"direct download", client(nil), "Bearer " + b.up.Token},
		{"outbound + JS", client(inst), ""},
		{"baseline Go forwarder", client(b.baselineURL()), ""},
	}
	for _, p := range paths {
		defer p.c.CloseIdleConnections()
	}
	// Warm the proxy up (isolate, upstream connection) before the baseline RSS.
	if _, _, err := download(ctx, paths[1].c, b.up.HTTPAddr, 1<<20, ""); err != nil {
		return fmt.Errorf("warm-up download: %w", err)
	}
	before, _, err := o.RSS()
	if err != nil {
		return err
	}
	sampler := samplePeak(o.pid, 10*time.Millisecond)
	took := make([]time.Duration, len(paths))
	moved := make([]int64, len(paths))
	for range b.opts.rounds {
		for i, p := range paths {
			n, d, err := download(ctx, p.c, b.up.HTTPAddr, b.opts.streamBytes, p.auth)
			if err != nil {
				sampler.Stop()
				return fmt.Errorf("download via %s: %w", p.name, err)
			}
			took[i] += d
			moved[i] += n
		}
	}
	peak := sampler.Stop()
	_, hwm, err := o.RSS()
	if err != nil {
		return err
	}
	peak = max(peak, hwm)
	tput := make([]float64, len(paths))
	for i, p := range paths {
		tput[i] = float64(moved[i]) / took[i].Seconds()
		s.Rows = append(s.Rows, Row{Target: p.name, Concurrency: 1,
			Stats: Stats{Requests: b.opts.rounds, Elapsed: took[i], RPS: float64(b.opts.rounds) / took[i].Seconds()},
			Ratio: tput[i] / tput[0],
			Note:  fmt.Sprintf("%s/s over %d × %s", mib(int64(tput[i])), b.opts.rounds, mib(b.opts.streamBytes))})
	}
	s.Ref = "direct"
	growth := peak - before
	r := tput[1] / tput[0]
	s.check("throughput vs direct download", r, ratio(r), "≥ 0.8×", r >= 0.8)
	s.note("outbound's throughput is %s the bare Go forwarder's: the direct path has one fewer process copying every byte through the kernel twice", ratio(tput[1]/tput[2]))
	s.check("proxy RSS growth during the download", float64(growth)/(1<<20), fmt.Sprintf("%s (%s → peak %s)", mib(growth), mib(before), mib(peak)), "< 64 MiB", growth < 64<<20)
	s.note("plain HTTP on every path; the script is testdata/bench/inject.js, which returns fetch() of the request with one header set; the bare forwarder shows what any extra hop costs here")
	return nil
}

// download fetches n bytes from the upstream's /stream and returns how many
// arrived and how long it took.
func download(ctx context.Context, c *http.Client, addr string, n int64, auth string) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stream?bytes="+strconv.FormatInt(n, 10), nil)
	if err != nil {
		return 0, 0, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	got, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
	if err != nil {
		return got, 0, fmt.Errorf("after %d bytes: %w", got, err)
	}
	if got != n {
		return got, 0, fmt.Errorf("got %d bytes, want %d", got, n)
	}
	return got, time.Since(t0), nil
}

// scenario5: memory with many instances registered, and whether the
// per-request decision gets slower with them.
func (b *bench) scenario5(ctx context.Context, s *Scenario) error {
	one, err := b.startOutbound(ctx, "outbound-1-instance")
	if err != nil {
		return err
	}
	many, err := b.startOutbound(ctx, "outbound-many-instances")
	if err != nil {
		return err
	}
	oneURL, _, err := one.NewInstance(ctx, "only")
	if err != nil {
		return err
	}
	rss0, _, err := many.RSS()
	if err != nil {
		return err
	}
	t0 := time.Now()
	urls, err := many.NewInstances(ctx, "sbx", b.opts.instances)
	if err != nil {
		return err
	}
	created := time.Since(t0)
	// Workers spread over the instances so lookups do not all hit one entry.
	spread := make([]*url.URL, 0, 256)
	for i := 0; i < 256; i++ {
		spread = append(spread, urls[(i*7919)%len(urls)])
	}
	targets := []Target{
		{Name: "outbound, 1 instance", URL: b.smallHTTP(), Proxies: []*url.URL{oneURL}, PID: one.CPUPID()},
		{Name: fmt.Sprintf("outbound, %d instances", b.opts.instances), URL: b.smallHTTP(), Proxies: spread, PID: many.CPUPID()},
	}
	s.Ref = "1 instance"
	for _, c := range []int{1, 32} {
		stats, err := Interleave(ctx, targets, c, b.opts.rounds, b.opts.warmup, b.opts.duration)
		if err != nil {
			return err
		}
		s.addRows(targets, c, stats, 0)
		r := stats[1].RPS / stats[0].RPS
		s.check(fmt.Sprintf("req/s with %d instances vs 1, conc %d", b.opts.instances, c), r, ratio(r), "≥ 0.9× (flat)", r >= 0.9)
		if c == 1 {
			d := stats[1].P50 - stats[0].P50
			s.note("median latency at conc 1: %s with 1 instance, %s with %d (difference %s)", ms(stats[0].P50), ms(stats[1].P50), b.opts.instances, ms(d))
		}
	}
	rssOne, _, err := one.RSS()
	if err != nil {
		return err
	}
	rssMany, _, err := many.RSS()
	if err != nil {
		return err
	}
	s.check(fmt.Sprintf("RSS with %d instances", b.opts.instances), float64(rssMany)/(1<<20),
		fmt.Sprintf("%s (1 instance: %s)", mib(rssMany), mib(rssOne)), "≤ 300 MiB", rssMany <= 300<<20)
	s.note("creating %d instances through the control API took %s (%.0f/s); RSS before them %s, after the load %s",
		b.opts.instances, created.Round(time.Millisecond), float64(b.opts.instances)/created.Seconds(), mib(rss0), mib(rssMany))
	return nil
}

// scenario6: hot reload under load. The script is rewritten with a new
// VERSION while 32 workers run; the time from the write to the first
// response carrying the new version is the reload latency.
func (b *bench) scenario6(ctx context.Context, s *Scenario) error {
	o, err := b.startOutbound(ctx, "outbound-reload")
	if err != nil {
		return err
	}
	inst, _, err := o.NewInstance(ctx, "reload")
	if err != nil {
		return err
	}
	var mu sync.Mutex
	firstSeen := map[string]time.Time{}
	const conc = 32
	t := Target{Name: "outbound + JS, reloading", URL: b.smallHTTP(), Proxies: []*url.URL{inst}, PID: o.CPUPID(),
		Observe: func(resp *http.Response, done time.Time) {
			v := resp.Header.Get("X-Bench-Version")
			mu.Lock()
			if _, ok := firstSeen[v]; !ok {
				firstSeen[v] = done
			}
			mu.Unlock()
		}}
	seen := func(v string) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		at, ok := firstSeen[v]
		return at, ok
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var st Stats
	var loadErr error
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		// Bounded even if the reloads hang: each is given at most 5 s.
		st, loadErr = Run(loadCtx, t, conc, b.opts.warmup, time.Duration(b.opts.reloads)*(b.opts.reloadGap+5*time.Second))
	}()
	var lat []time.Duration
	var missing int
	time.Sleep(b.opts.warmup)
	for i := 1; i <= b.opts.reloads && ctx.Err() == nil; i++ {
		time.Sleep(b.opts.reloadGap)
		v := strconv.Itoa(i)
		wrote := time.Now()
		if err := o.WriteVersion(b.script, v); err != nil {
			stopLoad()
			<-loadDone
			return err
		}
		for {
			if at, ok := seen(v); ok {
				lat = append(lat, at.Sub(wrote))
				break
			}
			if time.Since(wrote) > 5*time.Second {
				missing++
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(b.opts.reloadGap) // load after the last reload counts too
	stopLoad()
	<-loadDone
	if loadErr != nil {
		return loadErr
	}
	s.Rows = append(s.Rows, Row{Target: t.Name, Concurrency: conc, Stats: st})
	slices.Sort(lat)
	p50, p99 := Percentile(lat, 50), Percentile(lat, 99)
	s.check("reload p99, write to first new-generation response", float64(p99)/1e6,
		fmt.Sprintf("%s (p50 %s, %d reloads)", ms(p99), ms(p50), len(lat)), "< 300 ms", p99 < 300*time.Millisecond && missing == 0 && len(lat) > 0)
	s.check("failed requests during reloads", float64(st.Errors), strconv.Itoa(st.Errors), "0", st.Errors == 0)
	if missing > 0 {
		s.note("%d of %d reloads never answered with the new version within 5 s", missing, b.opts.reloads)
	}
	s.note("each reload renames a new copy of the script into place %s after the previous one", b.opts.reloadGap)
	return nil
}

var versionLine = regexp.MustCompile(`(?m)^const VERSION = "[^"]*";`)

// setVersion rewrites the bench script's VERSION constant.
func setVersion(src []byte, v string) ([]byte, error) {
	if !versionLine.Match(src) {
		return nil, fmt.Errorf("bench script has no `const VERSION = \"...\";` line")
	}
	return versionLine.ReplaceAll(src, []byte(`const VERSION = "`+v+`";`)), nil
}
