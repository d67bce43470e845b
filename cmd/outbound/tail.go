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

	"github.com/outbound-dev/outbound/internal/events"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

// ctlTail follows the live event stream until interrupted.
func ctlTail(c *client.Client, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "")
	pos, perr := interspersed(fs, args)
	if perr != nil || len(pos) > 1 {
		return fail(stderr, "ctl", 2, "usage: outbound ctl tail [ID] [--json]")
	}
	id := "" // every instance
	if len(pos) == 1 {
		id = pos[0]
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
		if len(line) == 0 { // an event it cannot read: print nothing
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

// tailLine renders one event for a person, or "" for what it cannot read.
func tailLine(ev client.Event) string {
	clock := func(t time.Time) string { return t.Local().Format("15:04:05.000") }
	who := func(id string) string {
		if id == "" {
			return "-"
		}
		return clean(id)
	}
	switch ev.Kind {
	case events.KindDecision:
		var d events.Decision
		if json.Unmarshal(ev.Data, &d) != nil {
			return ""
		}
		step := d.Step
		if d.Handler != nil {
			step += " (" + *d.Handler + ")"
		}
		return fmt.Sprintf("%s  %s  %s %s%s  → %d  %s  %.1f ms",
			clock(d.Time), who(d.Instance), clean(d.Method), clean(d.Host), clean(d.Path), d.Status, clean(step), d.MS)
	case events.KindConsole:
		var c events.Console
		if json.Unmarshal(ev.Data, &c) != nil {
			return ""
		}
		return fmt.Sprintf("%s  %s  console.%s  %s", clock(c.Time), who(c.Instance), clean(c.Level), clean(c.Message))
	case events.KindReload:
		var r events.Reload
		if json.Unmarshal(ev.Data, &r) != nil {
			return ""
		}
		if r.Error != nil {
			return fmt.Sprintf("%s  reload failed: %s (generation %d keeps serving)", clock(r.Time), clean(*r.Error), r.Generation)
		}
		return fmt.Sprintf("%s  reload: generation %d serving", clock(r.Time), r.Generation)
	case events.KindDropped:
		var d events.Dropped
		if json.Unmarshal(ev.Data, &d) != nil {
			return ""
		}
		return fmt.Sprintf("-- %d events dropped: this client fell behind --", d.Dropped)
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
