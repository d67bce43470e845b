package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func ptr(s string) *string { return &s }

// next returns the subscriber's next queued event, failing if none is.
func next(t *testing.T, s *Subscription) Event {
	t.Helper()
	select {
	case ev := <-s.Events():
		return ev
	default:
		t.Fatal("no event queued")
		return Event{}
	}
}

func empty(t *testing.T, s *Subscription) {
	t.Helper()
	select {
	case ev := <-s.Events():
		t.Fatalf("unexpected event %s %s", ev.Kind, ev.Data)
	default:
	}
}

func TestFanOutAndInstanceFilter(t *testing.T) {
	h := New(Options{})
	all, onlyA := h.Subscribe(""), h.Subscribe("a")
	defer all.Close()
	defer onlyA.Close()
	if !h.Active() || h.Subscribers() != 2 {
		t.Fatalf("active %v, %d subscribers", h.Active(), h.Subscribers())
	}

	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	h.Decision(Decision{Time: at, Instance: "a", Method: "GET", Host: "example.com", Path: "/x", Step: "outbound", Status: 200, MS: 1.23456, Handler: ptr("h")})
	h.Decision(Decision{Time: at, Instance: "b", Method: "CONNECT", Host: "example.org", Step: "denied", Status: 520})
	h.Decision(Decision{Time: at, Method: "GET", Host: "example.net", Step: "auth", Status: 407})
	h.Console(Console{Time: at, Instance: "a", Class: "C", Level: "info", Message: "hello"})
	h.Reload(3, nil)
	h.Reload(3, errors.New("policy.js:1:2: Unexpected end of file"))

	var kinds []string
	for range 6 {
		kinds = append(kinds, next(t, all).Kind)
	}
	empty(t, all)
	if got := strings.Join(kinds, ","); got != "decision,decision,decision,console,reload,reload" {
		t.Fatalf("all got %s", got)
	}

	d := next(t, onlyA)
	want := `{"time":"2025-01-02T03:04:05Z","instance":"a","method":"GET","host":"example.com","path":"/x","step":"outbound","blocked":false,"status":200,"ms":1.235,"handler":"h"}`
	if d.Kind != KindDecision || string(d.Data) != want {
		t.Fatalf("decision for a:\n got %s %s\nwant %s", d.Kind, d.Data, want)
	}
	if c := next(t, onlyA); c.Kind != KindConsole || !strings.Contains(string(c.Data), `"message":"hello"`) {
		t.Fatalf("console for a: %s %s", c.Kind, c.Data)
	}
	// Reloads concern every instance.
	ok, bad := next(t, onlyA), next(t, onlyA)
	if string(ok.Data[strings.Index(string(ok.Data), `"generation"`):]) != `"generation":3,"error":null}` {
		t.Fatalf("reload: %s", ok.Data)
	}
	if !strings.HasSuffix(string(bad.Data), `"generation":3,"error":"policy.js:1:2: Unexpected end of file"}`) {
		t.Fatalf("failed reload: %s", bad.Data)
	}
	empty(t, onlyA)

	all.Close()
	all.Close() // twice is harmless
	onlyA.Close()
	if h.Active() || h.Subscribers() != 0 {
		t.Fatalf("after Close: active %v, %d subscribers", h.Active(), h.Subscribers())
	}
}

func TestNoHandlerIsNull(t *testing.T) {
	h := New(Options{})
	s := h.Subscribe("")
	defer s.Close()
	h.Decision(Decision{Instance: "a", Step: "internet", Status: 200})
	var v map[string]any
	if err := json.Unmarshal(next(t, s).Data, &v); err != nil {
		t.Fatal(err)
	}
	if h, ok := v["handler"]; !ok || h != nil {
		t.Fatalf("handler should be null: %v", v)
	}
}

func TestNobodySubscribedPublishesNothing(t *testing.T) {
	var nilHub *Hub
	nilHub.Decision(Decision{}) // a proxy without a hub
	nilHub.Console(Console{})
	nilHub.Reload(1, nil)
	if nilHub.Active() {
		t.Fatal("a nil hub is active")
	}
	h := New(Options{Redact: func(string) string { t.Fatal("redacted with nobody watching"); return "" }})
	h.Decision(Decision{Host: "x"})
	h.Console(Console{Message: "x"})
	h.Reload(1, errors.New("x"))
}

func TestSlowSubscriberLosesEventsNotThePublisher(t *testing.T) {
	h := New(Options{Buffer: 4})
	slow, fast := h.Subscribe(""), h.Subscribe("")
	defer slow.Close()
	defer fast.Close()
	for i := range 10 {
		h.Decision(Decision{Instance: "a", Status: i}) // never blocks: nobody reads slow
		if ev := next(t, fast); !strings.Contains(string(ev.Data), `"status":`) {
			t.Fatalf("fast: %s", ev.Data)
		}
	}
	if got := h.Dropped(); got != 6 {
		t.Fatalf("hub dropped %d, want 6", got)
	}
	if got := slow.TakeDropped(); got != 6 {
		t.Fatalf("slow dropped %d, want 6", got)
	}
	if got := slow.TakeDropped(); got != 0 {
		t.Fatalf("TakeDropped did not reset: %d", got)
	}
	if fast.TakeDropped() != 0 {
		t.Fatal("the fast subscriber lost events")
	}
	// The oldest four are kept, in order.
	for i := range 4 {
		if ev := next(t, slow); !strings.Contains(string(ev.Data), `"status":`+string(rune('0'+i))) {
			t.Fatalf("slow event %d: %s", i, ev.Data)
		}
	}
}

func TestRedactsWhatASandboxOrScriptWrote(t *testing.T) {
	const secret = "sk-live-abcdef"
	h := New(Options{Redact: func(s string) string { return strings.ReplaceAll(s, secret, "[redacted]") }})
	s := h.Subscribe("")
	defer s.Close()
	h.Decision(Decision{Host: secret + ".example", Path: "/k/" + secret, Handler: ptr(secret)})
	h.Console(Console{Message: "key " + secret})
	h.Reload(2, errors.New("policy.js:1:1: "+secret))
	for range 3 {
		ev := next(t, s)
		if strings.Contains(string(ev.Data), secret) || !strings.Contains(string(ev.Data), "[redacted]") {
			t.Fatalf("%s not redacted: %s", ev.Kind, ev.Data)
		}
	}
}

func TestLongConsoleLineIsCut(t *testing.T) {
	h := New(Options{})
	s := h.Subscribe("")
	defer s.Close()
	h.Console(Console{Message: strings.Repeat("é", MaxConsole)})
	var c Console
	if err := json.Unmarshal(next(t, s).Data, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Message) > MaxConsole+len("… (truncated)") || !strings.HasSuffix(c.Message, "… (truncated)") {
		t.Fatalf("message of %d bytes, suffix %q", len(c.Message), c.Message[len(c.Message)-20:])
	}
}

// BenchmarkDecision is what the proxy pays per request to publish its
// decision. "idle" (nobody watching) must stay at one atomic load and no
// allocation; "watched" is the cost while one client follows the stream.
func BenchmarkDecision(b *testing.B) {
	d := Decision{Time: time.Now(), Instance: "sbx-1", Method: "GET", Host: "api.example.com",
		Path: "/v1/items", Step: "outbound_runtime", Status: 200, MS: 1.5, Handler: ptr("allowHosts")}
	b.Run("idle", func(b *testing.B) {
		h := New(Options{})
		b.ReportAllocs()
		for b.Loop() {
			if h.Active() { // as proxy.logAudit does
				h.Decision(d)
			}
		}
	})
	b.Run("watched", func(b *testing.B) {
		h := New(Options{})
		s := h.Subscribe("")
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-s.Events():
				case <-b.Context().Done():
					return
				}
			}
		}()
		b.ReportAllocs()
		for b.Loop() {
			if h.Active() {
				h.Decision(d)
			}
		}
		s.Close()
		b.Cleanup(func() { <-done })
	})
}
