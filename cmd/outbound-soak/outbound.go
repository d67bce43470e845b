package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/outbound-dev/outbound/proxy/control"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

// proc is `outbound serve` running as a child process: its goroutines and
// heap are then its own, read from its /metrics, and the soak's load
// generator garbage is not collected on its time.
type proc struct {
	Listen, Admin string
	Script        string // the policy script, rewritten on every reload
	LogPath       string
	src           []byte // the script as shipped, with VERSION "0"

	cmd    *exec.Cmd
	done   chan struct{}
	exit   error
	api    *client.Client
	scrape *http.Client
}

// startProc writes the script, env file and upstream CA into dir and starts
// bin on two free loopback ports.
func startProc(ctx context.Context, bin, dir, script string, up *Upstream, token, logLevel string) (*proc, error) {
	src, err := os.ReadFile(script)
	if err != nil {
		return nil, fmt.Errorf("policy script (run from the repository root): %w", err)
	}
	if _, err := setVersion(src, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", script, err)
	}
	p := &proc{Script: filepath.Join(dir, "policy.js"), LogPath: filepath.Join(dir, "outbound.log"), src: src,
		done: make(chan struct{}), scrape: &http.Client{Timeout: 10 * time.Second}}
	env, caFile := filepath.Join(dir, ".dev.vars"), filepath.Join(dir, "upstream-ca.pem")
	for name, b := range map[string][]byte{p.Script: src, env: []byte("SOAK_TOKEN=" + token + "\n"), caFile: up.CAPEM} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			return nil, err
		}
	}
	// outbound only reports the ports it chose for :0 in its info log, which
	// also carries an audit line per request; free ports are simpler.
	if p.Listen, err = freeAddr(); err != nil {
		return nil, err
	}
	if p.Admin, err = freeAddr(); err != nil {
		return nil, err
	}
	args := []string{"serve", "--script", p.Script, "--env-file", env,
		"--listen", p.Listen, "--admin", p.Admin, "--state", filepath.Join(dir, "state"),
		"--upstream-ca", caFile, "--log-format", "json", "--log-level", logLevel}
	for _, c := range up.ConnectTo() {
		args = append(args, "--connect-to", c)
	}
	logf, err := os.Create(p.LogPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// If the soak dies, so does the proxy: the soak must stop by itself.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		p.exit = p.cmd.Wait()
		close(p.done)
	}()
	p.api = client.New("http://"+p.Admin, "")
	if err := p.waitReady(ctx); err != nil {
		p.Stop()
		return nil, fmt.Errorf("outbound (log in %s): %w", p.LogPath, err)
	}
	return p, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady polls GET /v1/status, the spec's readiness check.
func (p *proc) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := p.api.Status(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was ready (%v): %w", p.exit, err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after 30s: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Exited is closed when the child has exited.
func (p *proc) Exited() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits up to 15 s for a clean exit, then kills.
// It returns the exit error, or one saying the child had to be killed.
func (p *proc) Stop() error {
	select {
	case <-p.done:
		return p.exit
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.exit
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("outbound did not exit within 15s of SIGTERM; killed")
	}
}

// Instance is one sandbox: its proxy URL (with token) and CA.
type Instance struct {
	ID       string
	ProxyURL *url.URL
	CAPEM    []byte
}

// CreateInstances creates soak-0 … soak-(n-1), eight at a time.
func (p *proc) CreateInstances(ctx context.Context, n int) ([]Instance, error) {
	out := make([]Instance, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				out[i], errs[i] = p.create(ctx, "soak-"+strconv.Itoa(i))
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (p *proc) create(ctx context.Context, id string) (Instance, error) {
	var c control.Created
	c, err := p.api.Create(ctx, id, "")
	if err != nil {
		return Instance{}, fmt.Errorf("creating instance %s: %w", id, err)
	}
	u, err := url.Parse(c.ProxyURL)
	if err != nil {
		return Instance{}, fmt.Errorf("instance %s: bad proxy_url: %w", id, err)
	}
	// The soak loads this machine only.
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return Instance{}, fmt.Errorf("instance %s: proxy_url host %q is not a loopback IP", id, u.Hostname())
	}
	return Instance{ID: c.ID, ProxyURL: u, CAPEM: []byte(c.CAPEM)}, nil
}

// Sample reads goroutines, heap and RSS from GET /metrics.
func (p *proc) Sample(ctx context.Context) (Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Admin+"/metrics", nil)
	if err != nil {
		return Sample{}, err
	}
	resp, err := p.scrape.Do(req)
	if err != nil {
		return Sample{}, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Sample{}, fmt.Errorf("scraping /metrics: status %d", resp.StatusCode)
	}
	s, err := parseMetrics(resp.Body)
	s.At = time.Now()
	return s, err
}

// versionLine is the line every reload rewrites.
var versionLine = regexp.MustCompile(`(?m)^const VERSION = "[^"]*";$`)

func setVersion(src []byte, v int) ([]byte, error) {
	if !versionLine.Match(src) {
		return nil, fmt.Errorf("policy script has no `const VERSION = \"...\";` line")
	}
	return versionLine.ReplaceAll(src, []byte(`const VERSION = "`+strconv.Itoa(v)+`";`)), nil
}

// WriteVersion rewrites the script with version v as an operator's editor
// would: a new file renamed over the old, so the watcher never sees half.
func (p *proc) WriteVersion(v int) error {
	b, err := setVersion(p.src, v)
	if err != nil {
		return err
	}
	tmp := p.Script + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p.Script)
}

// LogLevels counts outbound's log lines by level and message, most
// frequent first, so that a run's warnings and errors show in the report.
// Lines logged in the few seconds after a load stopped (ends) are counted
// apart: they are the requests the stop cut off.
func (p *proc) LogLevels(ends ...time.Time) ([]ErrorLine, error) {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n := map[string]int{}
	first := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l struct {
			Time              time.Time
			Level, Msg, Error string
			Status            int
		}
		key := "unparsed"
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			key = l.Level + " " + l.Msg
			for _, e := range ends {
				if !l.Time.Before(e.Add(-time.Second)) && l.Time.Before(e.Add(5*time.Second)) {
					key = "(as a load stopped) " + key
					break
				}
			}
			if l.Status != 0 {
				key += " " + strconv.Itoa(l.Status)
			}
			if l.Error != "" {
				key += " (" + truncate(l.Error, 80) + ")"
			}
		}
		n[key]++
		if _, ok := first[key]; !ok {
			first[key] = truncate(sc.Text(), 300)
		}
	}
	var out []ErrorLine
	for k, c := range n {
		out = append(out, ErrorLine{k, c, first[k]})
	}
	slices.SortFunc(out, func(a, b ErrorLine) int { return b.Count - a.Count })
	return out, sc.Err()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func randomToken() string {
	var b [16]byte
	rand.Read(b[:])
	return "soak-" + hex.EncodeToString(b[:])
}
