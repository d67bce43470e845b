package app_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// TestSSEStreamsThroughHandler: an event reaches the sandbox while the
// upstream is still holding the response open, through a JS handler's
// fetch, so nothing on the path buffers the body.
func TestSSEStreamsThroughHandler(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: first (%s)\n\n", r.Header.Get("X-Through"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		}
		fmt.Fprint(w, "data: second\n\n")
	}))
	defer up.Close()
	defer close(release)
	port := up.Listener.Addr().(*net.TCPAddr).Port
	srv := apptest.Start(t, app.Config{
		Script:    "../../testdata/server/passthrough.js",
		ConnectTo: []string{fmt.Sprintf("events.example:80:127.0.0.1:%d", port)},
	})
	c := apptest.Client(t, srv.Create(t, "sbx-sse", ""))
	resp, err := c.Get("http://events.example/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		if !strings.Contains(line, "first (handler)") {
			t.Fatalf("first event: %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first event did not arrive while the upstream held the stream open: something buffers")
	}
}
