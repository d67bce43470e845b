package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a proxy under test running as its own process, so that its
// resident memory can be read from /proc and is its alone.
type child struct {
	Name  string
	Addr  string // proxy listener, host:port
	cmd   *exec.Cmd
	stdin io.Closer
	done  chan struct{}
}

func newChild(name string, cmd *exec.Cmd, stdin io.Closer) *child {
	c := &child{Name: name, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	return c
}

// Stop asks the child to exit (stdin closed, then SIGTERM) and kills it if
// it has not after a few seconds.
func (c *child) Stop() {
	if c.stdin != nil {
		c.stdin.Close()
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// PID is the child's process id.
func (c *child) PID() int { return c.cmd.Process.Pid }

// RSS returns the child's current and peak resident set size in bytes.
func (c *child) RSS() (cur, peak int64, err error) {
	return readRSS(c.cmd.Process.Pid)
}

// readRSS reads VmRSS and VmHWM (the peak) of a process.
func readRSS(pid int) (cur, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("reading memory of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("pid %d: bad %s line %q", pid, k, line)
		}
		if k == "VmRSS" {
			cur = n << 10
		} else {
			peak = n << 10
		}
	}
	return cur, peak, nil
}

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

// readCPU returns the CPU time (user + system) a process has used so far.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; fields count from after it.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("pid %d: unexpected /proc stat line", pid)
	}
	var total int64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid %d: bad CPU time %q", pid, s)
		}
		total += n
	}
	return time.Duration(total) * clockTick, nil
}

// peakSampler polls a process's RSS until stopped and keeps the maximum, in
// case VmHWM includes a peak from before the measured part.
type peakSampler struct {
	stop chan struct{}
	done chan int64
}

func samplePeak(pid int, every time.Duration) *peakSampler {
	s := &peakSampler{stop: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if cur, _, err := readRSS(pid); err == nil {
				peak = max(peak, cur)
			}
			select {
			case <-s.stop:
				s.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the largest RSS seen.
func (s *peakSampler) Stop() int64 {
	close(s.stop)
	return <-s.done
}

// readLine reads one line or gives up when ctx ends or after 30 s.
func readLine(ctx context.Context, r *bufio.Reader) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := r.ReadString('\n')
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// waitTCP waits until addr accepts connections.
func waitTCP(ctx context.Context, addr string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, within, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
