package events

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// sseClient reads one stream, event by event.
type sseClient struct {
	resp *http.Response
	r    *bufio.Reader
}

// open starts a stream and returns once its headers (and so its
// subscription) are there.
func open(t *testing.T, ctx context.Context, url string) *sseClient {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sseClient{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event's kind and data, skipping comments.
func (c *sseClient) next(t *testing.T) (string, string) {
	t.Helper()
	var kind, data string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if data != "" {
				return kind, data
			}
		case strings.HasPrefix(line, "event: "):
			kind = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		}
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !f(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestStreamCarriesEventsInOrderAndFilters(t *testing.T) {
	h := New(Options{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	all := open(t, ctx, srv.URL)
	onlyB := open(t, ctx, srv.URL+"?instance=b")
	if h.Subscribers() != 2 {
		t.Fatalf("%d subscribers once both streams answered", h.Subscribers())
	}
	h.Decision(Decision{Instance: "a", Method: "GET", Host: "a.example", Path: "/", Step: "internet", Status: 200})
	h.Console(Console{Instance: "a", Level: "warn", Message: "line\nbreak"})
	h.Decision(Decision{Instance: "b", Method: "GET", Host: "b.example", Path: "/", Step: "denied", Status: 520})
	h.Reload(2, nil)

	for i, want := range []string{`decision {"time":"0001-01-01T00:00:00Z","instance":"a"`, `console {"time":"0001-01-01T00:00:00Z","instance":"a","class":"","level":"warn","message":"line\nbreak"}`, `decision {"time":"0001-01-01T00:00:00Z","instance":"b"`, `reload {"time":`} {
		kind, data := all.next(t)
		if got := kind + " " + data; !strings.HasPrefix(got, want) {
			t.Fatalf("event %d on the full stream:\n got %s\nwant %s...", i, got, want)
		}
	}
	if kind, data := onlyB.next(t); kind != "decision" || !strings.Contains(data, `"instance":"b"`) {
		t.Fatalf("filtered stream: %s %s", kind, data)
	}
	if kind, _ := onlyB.next(t); kind != "reload" {
		t.Fatalf("filtered stream missed the reload: %s", kind)
	}

	// A client that hangs up stops being a subscriber.
	cancel()
	waitFor(t, "both subscriptions to end", func() bool { return h.Subscribers() == 0 })
}

// TestSlowClientIsDroppedNotWaitedFor: a client that stops reading fills its
// socket, then its queue; from then on its events are dropped and counted,
// publishing goes on at full speed for everyone else, and once the client
// reads again it is told how many it lost.
func TestSlowClientIsDroppedNotWaitedFor(t *testing.T) {
	h := New(Options{Buffer: 8})
	srv := httptest.NewServer(h)
	defer srv.Close()

	// The slow client: a raw connection that sends its request and then
	// reads nothing.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /?instance=a HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, "the slow client's subscription", func() bool { return h.Subscribers() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fast := open(t, ctx, srv.URL)

	// Big events fill the slow client's socket buffers quickly. The fast
	// client reads each event before the next is published, so it never
	// falls behind, and the loop runs until the slow one has lost some.
	pad := strings.Repeat("p", 16<<10)
	sent := 0
	for h.Dropped() == 0 {
		if sent == 100000 {
			t.Fatal("100000 events and the slow client lost none")
		}
		h.Decision(Decision{Instance: "a", Path: "/" + pad, Status: sent})
		sent++
		if kind, data := fast.next(t); kind != "decision" || !strings.Contains(data, fmt.Sprintf(`"status":%d,`, sent-1)) {
			t.Fatalf("fast client, event %d: %s %.80s", sent-1, kind, data)
		}
	}
	lost := h.Dropped()

	// The slow client reads again: what it had queued, then the notice.
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("slow client stream: %v", err)
		}
		if line == "event: dropped\n" {
			data, _ := br.ReadString('\n')
			if want := fmt.Sprintf("data: {\"dropped\":%d}\n", lost); data != want {
				t.Fatalf("notice %q, want %q", data, want)
			}
			break
		}
	}
}

func TestIdleHubAllocatesNothing(t *testing.T) {
	h := New(Options{})
	d := Decision{Instance: "a", Host: "example.com", Path: "/", Handler: ptr("x")}
	if n := testing.AllocsPerRun(1000, func() { h.Decision(d) }); n != 0 {
		t.Fatalf("%v allocations per decision with nobody watching", n)
	}
}

func TestCloseEndsStreams(t *testing.T) {
	h := New(Options{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := open(t, context.Background(), srv.URL)
	h.Close()
	h.Close() // twice is harmless
	if _, err := io.ReadAll(c.r); err != nil {
		t.Fatalf("the stream broke instead of ending: %v", err)
	}
	waitFor(t, "the subscription to end", func() bool { return h.Subscribers() == 0 })
}
