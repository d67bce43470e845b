package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"strings"
	"time"
)

// The baseline is the least a forwarding proxy can do: net/http's
// ReverseProxy taking absolute-form requests, setting one header, with no
// identity, policy or JS. It runs in its own process (this binary,
// re-executed with baselineArg) so that its CPU and memory are its own, as
// outbound's and mitmdump's are.
const baselineArg = "serve-baseline"

// serveBaseline is the child's main: it listens on loopback, prints its
// address on stdout, and serves until stdin closes (the parent is gone).
func serveBaseline(token string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("baseline listen: %w", err)
	}
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024, // as many as the load's concurrency: no churn
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Header.Set("Authorization", "Bearer "+token)
		},
		Transport: tr,
		// The client's error count says what failed; a run's end cancels
		// in-flight requests, which is not worth a log line.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() {
			http.Error(w, "baseline: absolute-form requests only", http.StatusBadRequest)
			return
		}
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Println(ln.Addr().String())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startBaseline re-executes this binary as the baseline forwarder.
func startBaseline(ctx context.Context, token string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("baseline: finding own binary: %w", err)
	}
	cmd := exec.Command(self, baselineArg)
	cmd.Env = append(os.Environ(), "BENCH_TOKEN="+token)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("baseline: start: %w", err)
	}
	c := newChild("baseline", cmd, stdin)
	line, err := readLine(ctx, bufio.NewReader(stdout))
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("baseline: reading its address: %w", err)
	}
	c.Addr = strings.TrimSpace(line)
	return c, nil
}
