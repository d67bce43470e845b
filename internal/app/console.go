package app

import (
	"context"
	"log/slog"
	"strings"

	"github.com/outbound-dev/outbound/internal/events"
	"github.com/outbound-dev/outbound/jsapi"
)

// consoleTap copies handlers' console lines (records with source=console,
// as jsapi writes them) to the live event stream, then passes every record
// on. It sits above the redactor: the hub redacts what it publishes itself.
// While someone watches, console lines below the log level still reach the
// stream, since a person debugging a handler wants its console.debug.
type consoleTap struct {
	next slog.Handler
	hub  *events.Hub
}

func (h consoleTap) Enabled(ctx context.Context, l slog.Level) bool {
	return h.hub.Active() || h.next.Enabled(ctx, l)
}

func (h consoleTap) Handle(ctx context.Context, rec slog.Record) error {
	if h.hub.Active() {
		if c, ok := consoleLine(rec); ok {
			h.hub.Console(c)
		}
	}
	if !h.next.Enabled(ctx, rec.Level) {
		return nil
	}
	return h.next.Handle(ctx, rec)
}

func (h consoleTap) WithAttrs(as []slog.Attr) slog.Handler {
	return consoleTap{next: h.next.WithAttrs(as), hub: h.hub}
}

func (h consoleTap) WithGroup(name string) slog.Handler {
	return consoleTap{next: h.next.WithGroup(name), hub: h.hub}
}

// consoleLine reads a console record's instance and class.
func consoleLine(rec slog.Record) (events.Console, bool) {
	instance, class, ok := jsapi.ConsoleAttrs(rec)
	return events.Console{Time: rec.Time, Message: rec.Message, Level: strings.ToLower(rec.Level.String()),
		Instance: instance, Class: class}, ok
}
