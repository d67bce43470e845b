package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Report is everything one run measured; it is written as JSON and as
// Markdown.
type Report struct {
	Started   time.Time   `json:"started"`
	Machine   Machine     `json:"machine"`
	Settings  Settings    `json:"settings"`
	Scenarios []*Scenario `json:"scenarios"`
}

// Machine says where the numbers come from; they mean little without it.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	Commit   string `json:"commit,omitempty"`
	Mitmdump string `json:"mitmdump,omitempty"`
}

// Settings are the knobs of the run.
type Settings struct {
	Duration    time.Duration `json:"duration_per_target_ns"`
	Rounds      int           `json:"rounds"`
	Concurrency []int         `json:"concurrency"`
	StreamBytes int64         `json:"stream_bytes"`
	Instances   int           `json:"instances"`
	Reloads     int           `json:"reloads"`
}

// Scenario is one of the harness's six measurements.
type Scenario struct {
	ID     int      `json:"id"`
	Title  string   `json:"title"`
	Ref    string   `json:"ratio_reference,omitempty"` // the target the ratio column divides by
	Rows   []Row    `json:"rows"`
	Checks []Check  `json:"checks"`
	Notes  []string `json:"notes,omitempty"`
	Err    string   `json:"error,omitempty"`
}

// Row is one target at one concurrency.
type Row struct {
	Target      string  `json:"target"`
	Concurrency int     `json:"concurrency"`
	Stats       Stats   `json:"stats"`
	Ratio       float64 `json:"ratio,omitempty"` // req/s ÷ the reference's req/s
	Note        string  `json:"note,omitempty"`
}

// Check is one of the performance targets next to what was measured.
type Check struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Measured string  `json:"measured"`
	Target   string  `json:"target"`
	Pass     bool    `json:"pass"`
}

func (s *Scenario) check(name string, value float64, measured, target string, pass bool) {
	s.Checks = append(s.Checks, Check{Name: name, Value: value, Measured: measured, Target: target, Pass: pass})
}

func (s *Scenario) note(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

// addRows appends one row per target, with ratios against stats[ref] (no
// ratio when ref < 0).
func (s *Scenario) addRows(targets []Target, conc int, stats []Stats, ref int) {
	for i, st := range stats {
		r := Row{Target: targets[i].Name, Concurrency: conc, Stats: st}
		if ref >= 0 && stats[ref].RPS > 0 {
			r.Ratio = st.RPS / stats[ref].RPS
		}
		var notes []string
		if st.Unfinished > 0 && st.Requests < 10*st.Unfinished {
			notes = append(notes, fmt.Sprintf("%d requests still in flight when time was up", st.Unfinished))
		}
		if st.Errors > 0 {
			notes = append(notes, "first error: "+st.FirstError)
		}
		r.Note = strings.Join(notes, "; ")
		s.Rows = append(s.Rows, r)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// ratio shows three digits, so that a ratio just under a target does not
// print as equal to it.
func ratio(r float64) string { return fmt.Sprintf("%.3g×", r) }

// msOrDash is a latency cell; downloads have no latency distribution.
func msOrDash(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return ms(d)
}

func rate(r float64) string {
	if r < 100 {
		return fmt.Sprintf("%.2f", r)
	}
	return fmt.Sprintf("%.0f", r)
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// WriteMarkdown renders the report as the tables the README shows.
func (r *Report) WriteMarkdown(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "## outbound-bench, %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "Machine: %d CPUs (%s), Linux %s, %s", m.CPUs, m.CPUModel, m.Kernel, m.Go)
	if m.Commit != "" {
		fmt.Fprintf(w, ", outbound %s", m.Commit)
	}
	if m.Mitmdump != "" {
		fmt.Fprintf(w, ", mitmdump %s", m.Mitmdump)
	}
	fmt.Fprintf(w, ". %s per target and cell in %d interleaved rounds.\n", r.Settings.Duration, r.Settings.Rounds)
	for _, s := range r.Scenarios {
		fmt.Fprintf(w, "\n### %d. %s\n\n", s.ID, s.Title)
		if s.Err != "" {
			fmt.Fprintf(w, "**Failed:** %s\n", s.Err)
		}
		if len(s.Rows) > 0 {
			ratio := "ratio"
			if s.Ref != "" {
				ratio = "× " + s.Ref
			}
			fmt.Fprintf(w, "| target | conc | req/s | p50 | p99 | errors | proxy CPU/req | %s | note |\n|---|--:|--:|--:|--:|--:|--:|--:|---|\n", ratio)
			for _, row := range s.Rows {
				rt := ""
				if row.Ratio != 0 {
					rt = fmt.Sprintf("%.2f×", row.Ratio)
				}
				cpu := "–"
				if row.Stats.CPUPerReq > 0 {
					cpu = us(row.Stats.CPUPerReq)
				}
				fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %d | %s | %s | %s |\n", row.Target, row.Concurrency,
					rate(row.Stats.RPS), msOrDash(row.Stats.P50), msOrDash(row.Stats.P99), row.Stats.Errors, cpu, rt, mdEscape(row.Note))
			}
		}
		if len(s.Checks) > 0 {
			fmt.Fprintf(w, "\n| target | measured | wanted | |\n|---|--:|---|---|\n")
			for _, c := range s.Checks {
				fmt.Fprintf(w, "| %s | %s | %s | **%s** |\n", c.Name, c.Measured, c.Target, passMiss(c.Pass))
			}
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "\n- %s", mdEscape(n))
		}
		if len(s.Notes) > 0 {
			fmt.Fprintln(w)
		}
	}
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// WriteJSON writes the report to path, creating its directory.
func (r *Report) WriteJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("results dir for %s: %w", path, err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// describeMachine fills in what can be learned cheaply; missing pieces stay empty.
func describeMachine(mitmdump string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	if mitmdump != "" {
		if out, err := exec.Command(mitmdump, "--version").Output(); err == nil {
			first, _, _ := strings.Cut(string(out), "\n")
			m.Mitmdump = strings.TrimSpace(strings.TrimPrefix(first, "Mitmproxy:"))
		}
	}
	return m
}
