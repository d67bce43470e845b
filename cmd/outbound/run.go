package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/platform"
	"github.com/outbound-dev/outbound/proxy/childenv"
	"github.com/outbound-dev/outbound/proxy/control"
	"github.com/outbound-dev/outbound/proxy/control/client"
	"github.com/outbound-dev/outbound/proxy/jail"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	var f serveFlags
	var id, class, token string
	var jailed bool
	fs := newFlags("run", "run --script FILE [--id ID] [--class C] [--jail] [serve flags] -- CMD [ARGS...]\n       outbound run --admin URL --id ID [--token T] -- CMD [ARGS...]",
		"outbound run --script examples/github-token.js --env-file .dev.vars -- curl -s https://api.github.com/user\n  outbound run --jail --script examples/github-token.js -- node -e \"fetch('https://api.github.com/user').then(r => console.log(r.status))\"", stdout)
	f.register(fs, "127.0.0.1:0", "")
	fs.StringVar(&id, "id", "", "instance `ID` (default: generated)")
	fs.StringVar(&class, "class", "", "the script `CLASS` of the instance (default: the only class)")
	fs.BoolVar(&jailed, "jail", false, "enforce capture (Linux): run CMD in its own network namespace whose only way out is outbound; every TCP connection and DNS query is captured, everything else dropped")
	fs.StringVar(&token, "token", os.Getenv("OUTBOUND_INSTANCE_TOKEN"), "attach mode: the `TOKEN` of an instance that already exists (also OUTBOUND_INSTANCE_TOKEN)")
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return fail(stderr, "run", 2, "no command given: outbound run [flags] -- CMD [ARGS...]")
	}
	if jailed {
		if err := platform.LinuxOnly("--jail", jail.Needs); err != nil {
			return fail(stderr, "run", 1, "%v", err)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	var created control.Created
	if f.script == "" {
		if jailed {
			return fail(stderr, "run", 2, "--jail needs the embedded proxy: give --script (a captured connection is served in this process)")
		}
		if f.admin == "" {
			return fail(stderr, "run", 2, "give --script to run an embedded proxy, or --admin URL to attach to a running one")
		}
		if id == "" {
			return fail(stderr, "run", 2, "attach mode needs --id")
		}
		c := client.New(f.admin, f.adminToken)
		var err error
		if created, err = attach(ctx, c, id, class, token); err != nil {
			return fail(stderr, "run", 1, "%v", err)
		}
	} else {
		if f.admin == "" {
			f.admin = "127.0.0.1:0"
		}
		tmpState := f.state == ""
		if tmpState {
			dir, err := os.MkdirTemp("", "outbound-state-")
			if err != nil {
				return fail(stderr, "run", 1, "%v", err)
			}
			defer os.RemoveAll(dir)
			f.state = dir
		}
		cfg, err := f.config(stderr)
		if err != nil {
			return fail(stderr, "run", 2, "%v", err)
		}
		var pending *jail.Pending
		var jailDir string
		if jailed {
			// The jail is built first: a kernel that refuses it is the
			// one thing said, before anything else starts.
			if jailDir, err = os.MkdirTemp("", "outbound-run-"); err != nil {
				return fail(stderr, "run", 1, "%v", err)
			}
			defer os.RemoveAll(jailDir)
			pending, err = jail.Prepare(jail.Options{Argv: argv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Dir: jailDir})
			if err != nil {
				return fail(stderr, "run", 1, "--jail: %v", strings.TrimPrefix(err.Error(), "jail: "))
			}
			defer func() {
				if pending != nil {
					pending.Abort()
				}
			}()
		}
		srv, err := app.New(ctx, cfg)
		if err != nil {
			return fail(stderr, "run", 1, "%v", err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ctx) }()
		defer func() { stop(); <-served }()
		if created, err = srv.CreateInstance(ctx, id, class); err != nil {
			return fail(stderr, "run", 1, "creating instance: %v", err)
		}
		cfg.Logger.Debug("embedded proxy", "proxy", srv.ProxyAddr().String(), "admin", srv.AdminAddr().String(), "instance", created.ID)
		if jailed {
			p := pending
			pending = nil // runJailed owns it now
			return runJailed(p, jailDir, srv, cfg.Logger, created, stderr)
		}
	}
	return runChild(created, argv, stderr)
}

// attach finds or creates the instance on a running server. The token is
// shown only when an instance is created, so an existing one needs --token.
func attach(ctx context.Context, c *client.Client, id, class, token string) (control.Created, error) {
	created, err := c.Create(ctx, id, class)
	if err == nil {
		return created, nil
	}
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 409 {
		return created, fmt.Errorf("creating instance %q: %w", id, err)
	}
	if token == "" {
		return created, fmt.Errorf("instance %q exists and its token is shown only at creation: pass --token (or OUTBOUND_INSTANCE_TOKEN)", id)
	}
	pem, err := c.CAPEM(ctx, id)
	if err != nil {
		return created, err
	}
	proxyAddr, err := proxyAddrOf(ctx, c, id)
	if err != nil {
		return created, err
	}
	return control.Created{ID: id, ProxyURL: proxyURL(id, token, proxyAddr), CAPEM: string(pem)}, nil
}

// runChild runs argv with the instance environment and returns its exit
// status, forwarding signals and removing the CA files afterwards.
func runChild(created control.Created, argv []string, stderr io.Writer) int {
	dir, err := os.MkdirTemp("", "outbound-run-")
	if err != nil {
		return fail(stderr, "run", 1, "%v", err)
	}
	defer os.RemoveAll(dir)
	env, err := childEnv(dir, created, created.ProxyURL)
	if err != nil {
		return fail(stderr, "run", 1, "%v", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// A wrapper killed with SIGKILL cannot forward anything: on Linux the
	// kernel ends the child with it, so no sandbox outlives its proxy.
	platform.DieWithParent(cmd)

	var proc atomic.Pointer[os.Process]
	defer forwardSignals(&proc)()
	if err := cmd.Start(); err != nil {
		return fail(stderr, "run", 127, "starting %s: %v", argv[0], err)
	}
	proc.Store(cmd.Process)
	return exitStatus(cmd.Wait(), stderr)
}

// runJailed starts the command in the jail p built, with every connection
// captured into srv and the proxy variables naming the proxy at its address
// inside the jail, and returns its exit status.
func runJailed(p *jail.Pending, dir string, srv *app.App, log *slog.Logger, created control.Created, stderr io.Writer) int {
	proxyURL, err := proxyURLAt(created.ProxyURL, jail.Gateway.String(), strconv.Itoa(jail.ProxyPort))
	if err != nil {
		p.Abort()
		return fail(stderr, "run", 1, "%v", err)
	}
	env, err := childEnv(dir, created, proxyURL)
	if err != nil {
		p.Abort()
		return fail(stderr, "run", 1, "%v", err)
	}
	var proc atomic.Pointer[os.Process]
	defer forwardSignals(&proc)()
	j, err := p.Start(env, jail.StackOptions{
		Proxy:  srv.ProxyDialAddr(),
		Logger: log,
		Serve: func(ctx context.Context, conn net.Conn, host string, port int) {
			srv.ServeCaptured(ctx, conn, created.ID, host, port)
		},
	})
	if err != nil {
		return fail(stderr, "run", 1, "--jail: %v", strings.TrimPrefix(err.Error(), "jail: "))
	}
	proc.Store(j.Process())
	return exitStatus(j.Wait(), stderr)
}

// childEnv writes the CA files into dir and returns CMD's environment.
func childEnv(dir string, created control.Created, proxyURL string) ([]string, error) {
	paths, err := writeCAFiles(dir, created)
	if err != nil {
		return nil, err
	}
	return childenv.Merge(os.Environ(), childenv.Vars(created.ID, proxyURL, paths)), nil
}

// writeCAFiles writes the instance CA and the system roots merged with it
// into dir.
func writeCAFiles(dir string, created control.Created) (childenv.Paths, error) {
	roots, err := childenv.SystemRoots(os.Environ())
	if err != nil {
		return childenv.Paths{}, err
	}
	return childenv.WriteFiles(dir, []byte(created.CAPEM), roots)
}

// forwardSignals passes the signals a wrapper gets on to the process in
// proc (none until it is stored) until the returned func is called.
func forwardSignals(proc *atomic.Pointer[os.Process]) (stop func()) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				if p := proc.Load(); p != nil {
					p.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

func exitStatus(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fail(stderr, "run", 1, "%v", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}
