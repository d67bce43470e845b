package policytest

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/outbound-dev/outbound/jsapi"
)

// captureHandler puts log records under the test they belong to: every
// console.* line of the test and of its handlers, and the policy
// service's own notices (info and above).
type captureHandler struct {
	tr      *testRun        // the test, when the logger is a test's
	current func() *testRun // else the test running now (pool, session)
	dir     string          // paths under it are shown relative
	attrs   []slog.Attr
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	tr := h.tr
	if tr == nil && h.current != nil {
		tr = h.current()
	}
	if tr == nil {
		return nil
	}
	_, _, console := jsapi.ConsoleAttrs(r)
	var extra []string
	add := func(a slog.Attr) bool {
		switch a.Key {
		case "source", "instance", "class":
		default:
			extra = append(extra, fmt.Sprintf("%s=%v", a.Key, a.Value))
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	msg := shorten(h.dir, r.Message)
	switch {
	case console:
		tr.log(consoleLabel(r.Level) + ": " + msg)
	case r.Level >= slog.LevelInfo:
		line := "outbound: " + msg
		if len(extra) > 0 {
			line += " " + shorten(h.dir, strings.Join(extra, " "))
		}
		tr.log(line)
	}
	return nil
}

func consoleLabel(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "log"
	case l < slog.LevelError:
		return "warn"
	default:
		return "error"
	}
}

// shorten makes paths under dir relative, as the report shows them.
func shorten(dir, s string) string {
	if dir == "" {
		return s
	}
	return strings.ReplaceAll(s, dir+string(filepath.Separator), "")
}

func (h *captureHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), attrs...)
	return &c
}

func (h *captureHandler) WithGroup(string) slog.Handler { return h }
