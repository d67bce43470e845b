// Command outbound-soak is the soak test behind `make soak` (not in
// CI): it runs `outbound serve` as a child process with many instances, and
// drives it with many concurrent keep-alive clients for a long time, mixing
// plain HTTP through a header-injecting JS handler, HTTPS through MITM (over
// HTTP/1.1 and HTTP/2), WebSockets whose handshake passes through a handler,
// and a script reload every few seconds. Every answer is checked. It reads
// outbound's goroutines and heap from GET /metrics before, during and after
// the load, and fails on any unexpected error or on goroutines or heap that
// do not return to their baseline.
//
//	go run ./cmd/outbound-soak                                   # the full soak: about 13 minutes
//	go run ./cmd/outbound-soak -duration 20s -clients 100 -instances 10
//
// Everything runs on loopback: the echo upstream (HTTP, HTTPS, WebSocket)
// lives in this process and outbound reaches it through --connect-to. Run
// it from the repository root (it builds ./cmd/outbound unless given
// -outbound, and reads testdata/soak/).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

type options struct {
	duration, warmup, idle, settle  time.Duration
	sampleEvery, reloadEvery, grace time.Duration
	timeout, think                  time.Duration
	clients, instances              int
	outbound, script, logLevel      string
	limits                          Limits
	keep                            bool
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbound-soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pass, err := run(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbound-soak:", err)
		os.Exit(1)
	}
	if !pass {
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("outbound-soak", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the measured load runs")
	fs.IntVar(&o.clients, "clients", 1000, "concurrent keep-alive clients")
	fs.IntVar(&o.instances, "instances", 100, "outbound instances the clients are spread over")
	fs.DurationVar(&o.warmup, "warmup", 30*time.Second, "load before the baseline is taken, so pools and caches are at their working size")
	fs.DurationVar(&o.idle, "idle", 10*time.Second, "quiet time after a load stops before goroutines and heap are read")
	fs.DurationVar(&o.settle, "settle", 150*time.Second, "after the load, how much longer to keep reading while goroutines or heap are above their limits (upstream idle connections close after 90 s; Go forces a GC every 2 min)")
	fs.DurationVar(&o.sampleEvery, "sample-every", 30*time.Second, "how often /metrics is read during the load")
	fs.DurationVar(&o.reloadEvery, "reload-every", 10*time.Second, "how often the policy script is rewritten with a new version")
	fs.DurationVar(&o.grace, "reload-grace", 5*time.Second, "requests sent this long after a rewrite must carry the new version")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "per request, WebSocket handshake or echo round trip")
	fs.DurationVar(&o.think, "think", 0, "mean pause between a client's requests (0: closed loop)")
	fs.StringVar(&o.outbound, "outbound", "", "outbound binary (default: go build ./cmd/outbound into the temp dir)")
	fs.StringVar(&o.script, "script", "testdata/soak/policy.js", "the policy script; needs a `const VERSION = \"0\";` line")
	fs.StringVar(&o.logLevel, "outbound-log-level", "warn", "outbound's --log-level (info adds an audit line per request)")
	fs.IntVar(&o.limits.GoroutineSlack, "goroutine-slack", 50, "goroutines allowed above the baseline after the load")
	fs.Float64Var(&o.limits.HeapFactor, "heap-factor", 1.5, "heap in use allowed after the load, as a multiple of the baseline …")
	heapSlack := fs.Int("heap-slack-mib", 16, "… plus this many MiB")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (outbound's log, script, state) and print its path")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.limits.HeapSlack = float64(*heapSlack) * (1 << 20)
	if o.duration <= 0 || o.clients < 1 || o.instances < 1 || o.timeout <= 0 || o.reloadEvery <= 0 || o.sampleEvery <= 0 {
		return o, errors.New("-duration, -clients, -instances, -timeout, -reload-every and -sample-every must be positive")
	}
	if o.warmup < 0 || o.idle < 0 || o.settle < 0 || o.think < 0 || o.grace < 0 {
		return o, errors.New("-warmup, -idle, -settle, -think and -reload-grace must not be negative")
	}
	return o, nil
}

// raiseFDLimit lifts the soft open-files limit to the hard one: the soak
// holds both ends of every client connection plus the upstream's, and the
// outbound child inherits the limit.
func raiseFDLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", l.Max, err)
		}
	}
	return l.Cur, nil
}

// result is everything the report shows.
type result struct {
	opts                  options
	fdLimit               uint64
	warm, main            *Stats
	reloads               ReloadReport
	reloadErrs            []error
	baseline, peak, after Sample
	firstAfter            Sample
	samples               []Sample
	limitWhy              []string
	childErr              error
	logLines              []ErrorLine
	upReqs, upWS          int64
	upLogN                int
	upLogFirst            []string
}

func run(ctx context.Context, opts options) (bool, error) {
	// A bound on the whole run, so the soak always stops by itself.
	ctx, cancel := context.WithTimeout(ctx, opts.warmup+opts.duration+2*opts.idle+opts.settle+5*time.Minute)
	defer cancel()
	res := &result{opts: opts}
	var err error
	if res.fdLimit, err = raiseFDLimit(); err != nil {
		return false, err
	}
	if need := uint64(3*opts.clients + 200); res.fdLimit < need {
		return false, fmt.Errorf("open-files limit %d is below the %d this many clients need", res.fdLimit, need)
	}
	dir, err := os.MkdirTemp("", "outbound-soak-")
	if err != nil {
		return false, err
	}
	// A failed run keeps its directory: outbound's log is the evidence.
	pass := false
	defer func() {
		if opts.keep || !pass {
			fmt.Fprintln(os.Stderr, "outbound-soak: kept outbound's log, script and state in", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	bin := opts.outbound
	if bin == "" {
		bin = filepath.Join(dir, "outbound")
		logf("building ./cmd/outbound")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/outbound")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return false, fmt.Errorf("building outbound (run from the repository root): %w", err)
		}
	}

	token := randomToken()
	up, err := StartUpstream(token)
	if err != nil {
		return false, err
	}
	defer up.Close()
	p, err := startProc(ctx, bin, dir, opts.script, up, token, opts.logLevel)
	if err != nil {
		return false, err
	}
	defer p.Stop()
	// If outbound dies, everything stops and the run fails.
	ctx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	go func() {
		select {
		case <-p.Exited():
			cancelRun(fmt.Errorf("outbound exited during the soak (%v); see %s", p.ExitErr(), p.LogPath))
		case <-ctx.Done():
		}
	}()

	logf("creating %d instances", opts.instances)
	insts, err := p.CreateInstances(ctx, opts.instances)
	if err != nil {
		return false, err
	}
	versions := NewVersionTracker(time.Now(), opts.grace)
	load := &Load{Instances: insts, Versions: versions, Timeout: opts.timeout, Think: opts.think}

	// Warm-up: the same load, so pools, leaf caches and isolates reach their
	// working size before the baseline.
	res.warm = newStats()
	logf("warm-up: %d clients for %s", opts.clients, opts.warmup)
	wctx, wcancel := context.WithTimeout(ctx, opts.warmup)
	err = load.Run(wctx, opts.clients, res.warm)
	wcancel()
	if err != nil {
		return false, err
	}
	if !waitCtx(ctx, opts.idle) {
		return false, context.Cause(ctx)
	}
	if res.baseline, err = p.Sample(ctx); err != nil {
		return false, err
	}
	logf("baseline: %s", describe(res.baseline))

	res.main = newStats()
	logf("load: %d clients over %d instances for %s, a reload every %s", opts.clients, opts.instances, opts.duration, opts.reloadEvery)
	if err := runMain(ctx, opts, p, load, res); err != nil {
		return false, err
	}
	res.reloads = versions.Report(res.main.End)
	logf("load stopped; waiting %s for connections to close", opts.idle)

	if !waitCtx(ctx, opts.idle) {
		return false, context.Cause(ctx)
	}
	if res.after, err = p.Sample(ctx); err != nil {
		return false, err
	}
	res.firstAfter = res.after
	logf("after +%s: %s", opts.idle, describe(res.after))
	settleEnd := time.Now().Add(opts.settle)
	for res.limitWhy = opts.limits.settled(res.baseline, res.after); len(res.limitWhy) > 0 && time.Now().Before(settleEnd); res.limitWhy = opts.limits.settled(res.baseline, res.after) {
		if !waitCtx(ctx, min(10*time.Second, time.Until(settleEnd))) {
			return false, context.Cause(ctx)
		}
		if res.after, err = p.Sample(ctx); err != nil {
			return false, err
		}
		logf("after +%s: %s", res.after.At.Sub(res.main.End).Round(time.Second), describe(res.after))
	}

	res.upReqs, res.upWS = up.Requests.Load(), up.WSSessions.Load()
	cancelRun(nil) // outbound exiting from here on is the clean stop below
	res.childErr = p.Stop()
	res.upLogN, res.upLogFirst = up.logs.snapshot()
	if res.logLines, err = p.LogLevels(res.warm.Stop, res.main.Stop); err != nil {
		return false, fmt.Errorf("reading outbound's log: %w", err)
	}
	pass = report(os.Stdout, res)
	return pass, nil
}

// runMain is the measured load with reloads and periodic samples.
func runMain(ctx context.Context, opts options, p *proc, load *Load, res *result) error {
	mctx, mcancel := context.WithTimeout(ctx, opts.duration)
	defer mcancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Go(func() { // reloads
		t := time.NewTicker(opts.reloadEvery)
		defer t.Stop()
		for {
			select {
			case <-mctx.Done():
				return
			case <-t.C:
			}
			v := load.Versions.Next()
			if err := p.WriteVersion(v); err != nil {
				mu.Lock()
				res.reloadErrs = append(res.reloadErrs, fmt.Errorf("writing version %d: %w", v, err))
				mu.Unlock()
				continue
			}
			load.Versions.Wrote(v, time.Now())
		}
	})
	wg.Go(func() { // samples
		every := min(opts.sampleEvery, max(opts.duration/4, time.Second))
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-mctx.Done():
				return
			case <-t.C:
			}
			s, err := p.Sample(mctx)
			if err != nil {
				if mctx.Err() == nil {
					logf("sample: %v", err)
					res.main.Errs.Add("metrics", err)
				}
				continue
			}
			mu.Lock()
			res.samples = append(res.samples, s)
			mu.Unlock()
			el := s.At.Sub(res.main.Start)
			logf("+%s: %d ok (%.0f/s), %d errors; %s", el.Round(time.Second), res.main.Requests(),
				float64(res.main.Requests())/el.Seconds(), res.main.Errs.Total(), describe(s))
		}
	})
	err := load.Run(mctx, opts.clients, res.main)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		return cause // outbound died or the run was interrupted
	}
	for _, s := range res.samples {
		res.peak.At = s.At
		res.peak.Goroutines = max(res.peak.Goroutines, s.Goroutines)
		res.peak.HeapInuse = max(res.peak.HeapInuse, s.HeapInuse)
		res.peak.RSS = max(res.peak.RSS, s.RSS)
		res.peak.Tunnels = max(res.peak.Tunnels, s.Tunnels)
	}
	return err
}

func describe(s Sample) string {
	return fmt.Sprintf("goroutines %.0f, heap in use %s, RSS %s, tunnels %.0f", s.Goroutines, mib(s.HeapInuse), mib(s.RSS), s.Tunnels)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s outbound-soak: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}
