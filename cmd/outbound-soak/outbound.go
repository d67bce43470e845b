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
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/outbound-dev/outbound/internal/serveproc"
	"github.com/outbound-dev/outbound/proxy/control"
)

// proc is `outbound serve` running as a child process: its goroutines and
// heap are then its own, read from its /metrics, and the soak's load
// generator garbage is not collected on its time.
type proc struct {
	*serveproc.Proc
	Script  string // the policy script, rewritten on every reload
	LogPath string
	src     []byte // the script as shipped, with VERSION "0"
	scrape  *http.Client
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
		scrape: &http.Client{Timeout: 10 * time.Second}}
	env, caFile := filepath.Join(dir, ".dev.vars"), filepath.Join(dir, "upstream-ca.pem")
	for name, b := range map[string][]byte{p.Script: src, env: []byte("SOAK_TOKEN=" + token + "\n"), caFile: up.CAPEM} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			return nil, err
		}
	}
	args := []string{"--script", p.Script, "--env-file", env, "--state", filepath.Join(dir, "state"),
		"--upstream-ca", caFile, "--log-format", "json", "--log-level", logLevel}
	for _, c := range up.ConnectTo() {
		args = append(args, "--connect-to", c)
	}
	if p.Proc, err = serveproc.Start(ctx, serveproc.Options{Bin: bin, Args: args, LogPath: p.LogPath}); err != nil {
		return nil, err
	}
	return p, nil
}

// Instance is one sandbox: its proxy URL (with token) and CA.
type Instance struct {
	ID       string
	ProxyURL *url.URL
	CAPEM    []byte
}

// CreateInstances creates soak-0 … soak-(n-1), eight at a time.
func (p *proc) CreateInstances(ctx context.Context, n int) ([]Instance, error) {
	created, err := serveproc.CreateInstances(ctx, p.API, "soak", n)
	if err != nil {
		return nil, err
	}
	out := make([]Instance, n)
	for i, c := range created {
		if out[i], err = instanceOf(c); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func instanceOf(c control.Created) (Instance, error) {
	id := c.ID
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
