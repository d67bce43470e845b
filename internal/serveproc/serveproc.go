// Package serveproc runs `outbound serve` as a child process, the way an
// operator or an orchestrator does: on free loopback ports, with its log in
// a file, ready when GET /v1/status answers, stopped by SIGTERM. The load
// harness and the soak test start outbound through it, so that the
// proxy's memory, CPU and goroutines are its own.
package serveproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/outbound-dev/outbound/internal/platform"
	"github.com/outbound-dev/outbound/proxy/control"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

// Options say how to start one outbound.
type Options struct {
	Bin string // the outbound binary
	// Args are the serve flags besides --listen and --admin, which Start
	// picks: --script, --state, and whatever the caller needs.
	Args    []string
	LogPath string // stdout and stderr go here
	// ReadyWithin bounds the wait for readiness; default 30 s.
	ReadyWithin time.Duration
}

// Proc is a running `outbound serve`.
type Proc struct {
	Listen string // proxy listener, host:port
	Admin  string // control API, host:port
	API    *client.Client

	cmd  *exec.Cmd
	done chan struct{}
	exit error
}

// Start starts outbound on two free loopback ports and waits until its
// control API answers. Free ports rather than :0, because the only place
// outbound reports the ports :0 chose is its info log.
func Start(ctx context.Context, o Options) (*Proc, error) {
	listen, err := platform.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	admin, err := platform.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(o.LogPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"serve", "--listen", listen, "--admin", admin}, o.Args...)
	p := &Proc{Listen: listen, Admin: admin, API: client.New("http://"+admin, ""), done: make(chan struct{})}
	p.cmd = exec.Command(o.Bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	platform.DieWithParent(p.cmd) // a crashed harness leaves no proxy behind
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", o.Bin, err)
	}
	go func() {
		p.exit = p.cmd.Wait()
		close(p.done)
	}()
	within := o.ReadyWithin
	if within <= 0 {
		within = 30 * time.Second
	}
	if err := WaitReady(ctx, p.API, p.done, within); err != nil {
		p.Stop()
		return nil, fmt.Errorf("outbound (log in %s, %v): %w", o.LogPath, p.exit, err)
	}
	return p, nil
}

// WaitReady polls GET /v1/status through api until it answers, as the
// contract defines readiness, failing early once exited is closed.
func WaitReady(ctx context.Context, api *client.Client, exited <-chan struct{}, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		_, err := api.Status(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before it was ready: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", within, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PID is the child's process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the child has exited.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// ExitErr is how the child exited; it is nil until Exited is closed.
func (p *Proc) ExitErr() error {
	select {
	case <-p.done:
		return p.exit
	default:
		return nil
	}
}

// Stop sends SIGTERM and waits up to a minute for a clean exit (outbound
// drains for its --shutdown-grace, 10 s by default, then closes what is
// left), then kills. It returns the exit error, or one saying the child had
// to be killed.
func (p *Proc) Stop() error {
	select {
	case <-p.done:
		return p.exit
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.exit
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("outbound did not exit within a minute of SIGTERM; killed")
	}
}

// CreateInstances creates prefix-0 … prefix-(n-1) through api, eight at a
// time, as an orchestrator would, and returns their creation answers in
// order.
func CreateInstances(ctx context.Context, api *client.Client, prefix string, n int) ([]control.Created, error) {
	out := make([]control.Created, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				out[i], errs[i] = api.Create(ctx, prefix+"-"+strconv.Itoa(i), "")
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("creating instance %s-%d: %w", prefix, i, err)
		}
	}
	return out, nil
}
