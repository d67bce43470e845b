package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/outbound-dev/outbound/proxy/control/client"
)

// ctlTail follows the live event stream until interrupted.
func ctlTail(c *client.Client, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "")
	var id string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil || fs.NArg() > 1 || (id != "" && fs.NArg() > 0) {
		return fail(stderr, "ctl", 2, "usage: outbound ctl tail [ID] [--json]")
	}
	if id == "" {
		id = fs.Arg(0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := c.Events(ctx, id, func(ev client.Event) error {
		var line []byte
		if *asJSON {
			line, _ = json.Marshal(struct {
				Event string          `json:"event"`
				Data  json.RawMessage `json:"data"`
			}{ev.Kind, ev.Data})
		} else {
			line = []byte(tailLine(ev))
		}
		if line == nil {
			return nil
		}
		_, err := stdout.Write(append(line, '\n'))
		return err
	})
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return 0 // interrupted: the normal way to stop following
	}
	return fail(stderr, "ctl", 1, "tail: %v", err)
}

// tailLine renders one event for a person, or "" for kinds it does not know.
func tailLine(ev client.Event) string {
	var e struct {
		Time       time.Time `json:"time"`
		Instance   string    `json:"instance"`
		Method     string    `json:"method"`
		Host       string    `json:"host"`
		Path       string    `json:"path"`
		Step       string    `json:"step"`
		Status     int       `json:"status"`
		MS         float64   `json:"ms"`
		Handler    *string   `json:"handler"`
		Level      string    `json:"level"`
		Message    string    `json:"message"`
		Generation int       `json:"generation"`
		Error      *string   `json:"error"`
		Dropped    uint64    `json:"dropped"`
	}
	if json.Unmarshal(ev.Data, &e) != nil {
		return ""
	}
	when := e.Time.Local().Format("15:04:05.000")
	who := e.Instance
	if who == "" {
		who = "-"
	}
	switch ev.Kind {
	case "decision":
		step := e.Step
		if e.Handler != nil {
			step += " (" + *e.Handler + ")"
		}
		return fmt.Sprintf("%s  %s  %s %s%s  → %d  %s  %.1f ms",
			when, clean(who), e.Method, clean(e.Host), clean(e.Path), e.Status, clean(step), e.MS)
	case "console":
		return fmt.Sprintf("%s  %s  console.%s  %s", when, clean(who), e.Level, clean(e.Message))
	case "reload":
		if e.Error != nil {
			return fmt.Sprintf("%s  reload failed: %s (generation %d keeps serving)", when, clean(*e.Error), e.Generation)
		}
		return fmt.Sprintf("%s  reload: generation %d serving", when, e.Generation)
	case "dropped":
		return fmt.Sprintf("-- %d events dropped: this client fell behind --", e.Dropped)
	}
	return ""
}

// clean escapes control characters, so a path or console line a sandbox
// wrote cannot move the cursor or recolour the operator's terminal.
func clean(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }
