package client

import (
	"errors"
	"strings"
	"testing"
)

func TestReadEvents(t *testing.T) {
	stream := ": outbound events\n\nevent: decision\ndata: {\"a\":1}\n\n: keep-alive\n\n" +
		"data: one\ndata: two\n\nevent: console\r\ndata:{}\r\n\r\nevent: reload\n\n"
	var got []string
	err := readEvents(strings.NewReader(stream), func(ev Event) error {
		got = append(got, ev.Kind+" "+string(ev.Data))
		return nil
	})
	if want := "decision {\"a\":1}|message one\ntwo|console {}"; strings.Join(got, "|") != want {
		t.Fatalf("events %q, want %q", strings.Join(got, "|"), want)
	}
	if err == nil || !strings.Contains(err.Error(), "the server ended it") {
		t.Fatalf("end of stream: %v", err)
	}
	stop := errors.New("stop")
	if err := readEvents(strings.NewReader(stream), func(Event) error { return stop }); err != stop {
		t.Fatalf("fn's error came back as %v", err)
	}
}

// FuzzReadEvents: any stream reads without panicking into events that have
// a kind, and an event written as the server writes it reads back as it was.
func FuzzReadEvents(f *testing.F) {
	f.Add("decision", `{"instance":"a"}`, "event: x\ndata: y\n\n:c\ndata\n\n")
	f.Add("dropped", `{"dropped":3}`, "data: a\rb\n\nevent:\n\n")
	f.Fuzz(func(t *testing.T, kind, data, raw string) {
		_ = readEvents(strings.NewReader(raw), func(ev Event) error {
			if ev.Kind == "" {
				t.Fatalf("event without a kind from %q", raw)
			}
			return nil
		})
		if kind == "" || strings.ContainsAny(kind+data, "\r\n") {
			return // the server never writes these
		}
		var got []Event
		readEvents(strings.NewReader("event: "+kind+"\ndata: "+data+"\n\n"), func(ev Event) error {
			got = append(got, ev)
			return nil
		})
		if len(got) != 1 || got[0].Kind != kind || string(got[0].Data) != data {
			t.Fatalf("event %q %q read back as %+v", kind, data, got)
		}
	})
}
