// Command outbound-bench is the load harness behind `make bench`: it runs outbound
// side by side with a bare Go forwarding proxy and (when installed) mitmdump,
// drives them all with one closed-loop load generator, and reports ratios
// measured in the same run, because this machine is shared and noisy.
//
// Everything runs on loopback: a local upstream (HTTP and HTTPS) in this
// process, and each proxy in its own process so that its memory is its own.
// Output is a Markdown table on stdout and a JSON file.
//
//	go run ./cmd/outbound-bench                # about 3 minutes
//	go run ./cmd/outbound-bench -long          # longer cells, more reloads
//	go run ./cmd/outbound-bench -scenarios 1,6 -duration 2s
//
// Run it from the repository root (it builds ./cmd/outbound unless given
// -outbound, and reads testdata/bench/).
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
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	duration, warmup, reloadGap time.Duration
	rounds, instances, reloads  int
	concurrency, scenarios      []int
	streamBytes                 int64
	jsonPath, outbound, mitm    string
	script, addon, logLevel     string
	hey                         string
	keep                        bool
	cpuprofile                  string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == baselineArg {
		if err := serveBaseline(os.Getenv("BENCH_TOKEN")); err != nil {
			fmt.Fprintln(os.Stderr, "outbound-bench baseline:", err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbound-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "outbound-bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("outbound-bench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "measured time per target and concurrency level, split over the rounds")
	fs.DurationVar(&o.warmup, "warmup", 300*time.Millisecond, "unmeasured warm-up before each measured run")
	fs.IntVar(&o.rounds, "rounds", 2, "interleaved rounds per cell (A B A B …)")
	conc := fs.String("concurrency", "1,32,256", "comma-separated concurrency levels")
	scen := fs.String("scenarios", "1,2,3,4,5,6", "comma-separated scenarios to run")
	fs.Int64Var(&o.streamBytes, "stream-bytes", 1<<30, "size of the scenario 4 download in bytes")
	fs.IntVar(&o.instances, "instances", 10000, "instances registered in scenario 5")
	fs.IntVar(&o.reloads, "reloads", 10, "script reloads in scenario 6")
	fs.DurationVar(&o.reloadGap, "reload-gap", 300*time.Millisecond, "time between reloads in scenario 6")
	fs.StringVar(&o.jsonPath, "json", "bench-results/latest.json", "where to write the JSON results")
	fs.StringVar(&o.outbound, "outbound", "", "outbound binary to drive (default: go build ./cmd/outbound into the temp dir)")
	fs.StringVar(&o.mitm, "mitmdump", "mitmdump", `mitmdump binary; "" skips it`)
	fs.StringVar(&o.script, "script", "testdata/bench/inject.js", "the credential-injection policy script")
	fs.StringVar(&o.addon, "addon", "testdata/bench/inject_addon.py", "the equivalent mitmdump addon")
	fs.StringVar(&o.logLevel, "outbound-log-level", "warn", "outbound's --log-level; at info it writes an audit line per request")
	fs.StringVar(&o.hey, "hey", "", "the hey binary, the outside load generator of scenarios 1 and 2 (default: hey on PATH or in GOPATH/bin; \"none\" skips it)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the run to `FILE`; outbound then runs inside the harness (its RSS includes the harness)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (proxy logs, scripts) and print its path")
	long := fs.Bool("long", false, "longer run: 10s cells in 4 rounds, 30 reloads (explicit flags win)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *long {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			o.duration = 10 * time.Second
		}
		if !set["rounds"] {
			o.rounds = 4
		}
		if !set["reloads"] {
			o.reloads = 30
		}
	}
	var err error
	if o.concurrency, err = intList(*conc); err != nil {
		return o, fmt.Errorf("-concurrency: %w", err)
	}
	if o.scenarios, err = intList(*scen); err != nil {
		return o, fmt.Errorf("-scenarios: %w", err)
	}
	if o.rounds < 1 || o.duration <= 0 || o.instances < 1 || o.reloads < 1 || o.streamBytes < 1 {
		return o, errors.New("-rounds, -duration, -instances, -reloads and -stream-bytes must be positive")
	}
	return o, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

var titles = map[int]string{
	1: "HTTP keep-alive, small responses",
	2: "HTTPS through MITM, keep-alive",
	3: "HTTPS, new connection per request",
	4: "Streamed download through `return fetch(request)`",
	5: "Many instances registered",
	6: "Hot reload under load",
}

func run(ctx context.Context, opts options) (err error) {
	dir, err := os.MkdirTemp("", "outbound-bench-")
	if err != nil {
		return err
	}
	if opts.keep {
		fmt.Fprintln(os.Stderr, "outbound-bench: temp dir", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	b := &bench{opts: opts, dir: dir}
	if opts.hey != "none" {
		if b.hey, err = findHey(opts.hey); err != nil {
			return err
		}
	}
	if opts.cpuprofile != "" {
		f, err := os.Create(opts.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if b.script, err = os.ReadFile(opts.script); err != nil {
		return fmt.Errorf("bench script (run from the repository root): %w", err)
	}
	if opts.cpuprofile == "" {
		if b.outbin, err = outboundBinary(ctx, opts.outbound, dir); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if b.up, err = StartUpstream(ctx, "bench-"+strconv.FormatInt(time.Now().UnixNano(), 36)); err != nil {
		return err
	}
	caFile := filepath.Join(dir, "upstream-ca.pem")
	if err := os.WriteFile(caFile, b.up.CAPEM, 0o600); err != nil {
		return err
	}
	if b.baseline, err = startBaseline(ctx, b.up.Token); err != nil {
		return err
	}
	b.started = append(b.started, b.baseline)
	defer func() {
		for _, c := range b.started {
			c.Stop()
		}
	}()
	mitmNote := `mitmdump skipped (-mitmdump "")`
	if opts.mitm != "" {
		mitmNote = ""
		if bin, lerr := exec.LookPath(opts.mitm); lerr != nil {
			mitmNote = "mitmdump not found; its comparisons are skipped (apt-get install mitmproxy)"
		} else {
			mdir := filepath.Join(dir, "mitmdump")
			if err := os.MkdirAll(mdir, 0o700); err != nil {
				return err
			}
			if b.mitm, err = startMitmdump(ctx, bin, mdir, opts.addon, caFile, b.up.Token); err != nil {
				return err
			}
			b.started = append(b.started, b.mitm.child)
			opts.mitm = bin
		}
	}
	rep := &Report{Started: time.Now(), Machine: describeMachine(opts.mitm),
		Settings: Settings{Duration: opts.duration, Rounds: opts.rounds, Concurrency: opts.concurrency,
			StreamBytes: opts.streamBytes, Instances: opts.instances, Reloads: opts.reloads}}
	if b.mitm == nil {
		rep.Machine.Mitmdump = ""
	}
	steps := map[int]func(context.Context, *Scenario) error{
		1: b.scenario1, 2: b.scenario2, 3: b.scenario3, 4: b.scenario4, 5: b.scenario5, 6: b.scenario6,
	}
	for _, id := range opts.scenarios {
		step, ok := steps[id]
		if !ok {
			return fmt.Errorf("no scenario %d (there are 1 to 6)", id)
		}
		s := &Scenario{ID: id, Title: titles[id]}
		fmt.Fprintf(os.Stderr, "outbound-bench: scenario %d: %s\n", id, s.Title)
		if err := step(ctx, s); err != nil {
			s.Err = err.Error()
			fmt.Fprintf(os.Stderr, "outbound-bench: scenario %d failed: %v\n", id, err)
		}
		if opts.cpuprofile != "" && (id == 4 || id == 5) {
			s.note("outbound ran inside the harness for -cpuprofile: the RSS figures include the load generator and upstream")
		}
		if mitmNote != "" && id <= 3 {
			s.note("%s", mitmNote)
		}
		rep.Scenarios = append(rep.Scenarios, s)
		if ctx.Err() != nil {
			break
		}
	}
	rep.WriteMarkdown(os.Stdout)
	if err := rep.WriteJSON(opts.jsonPath); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "outbound-bench: JSON written to", opts.jsonPath)
	return ctx.Err()
}

// outboundBinary returns the binary to drive, building ./cmd/outbound when
// none is given.
func outboundBinary(ctx context.Context, given, dir string) (string, error) {
	if given != "" {
		return given, nil
	}
	bin := filepath.Join(dir, "outbound")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/outbound")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building ./cmd/outbound (run from the repository root, or pass -outbound): %w", err)
	}
	return bin, nil
}
