package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/testlog"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

// TestSIGTERMCutsEndlessStream: an SSE stream through a handler that never
// ends does not keep `serve` alive. SIGTERM drains for --shutdown-grace,
// then closes the stream and exits 0, logging what it cut.
func TestSIGTERMCutsEndlessStream(t *testing.T) {
	upstreamDone := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // endless: only the proxy hanging up ends it
		close(upstreamDone)
	}))
	defer up.Close()
	port := up.Listener.Addr().(*net.TCPAddr).Port

	stderr := &testlog.Buffer{} // safe to read while the process writes
	cmd := exec.Command(binary, "serve", "--script", passthroughScript, "--state", t.TempDir(),
		"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-format", "json",
		"--connect-to", fmt.Sprintf("events.test:80:127.0.0.1:%d", port), "--shutdown-grace", "1s")
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	re := regexp.MustCompile(`"proxy":"([^"]+)","admin":"([^"]+)"`)
	var m []string
	waitFor(t, "serve to log its addresses", func() bool {
		m = re.FindStringSubmatch(stderr.String())
		return m != nil
	})
	admin := client.New(m[2], "")
	waitFor(t, "GET /v1/status to answer", func() bool {
		_, err := admin.Status(context.Background())
		return err == nil
	})
	created, err := admin.Create(context.Background(), "sbx-sse", "")
	if err != nil {
		t.Fatal(err)
	}
	proxyURL, _ := url.Parse(created.ProxyURL)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	res, err := c.Get("http://events.test/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "data: first\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM; want status 0\n%s", err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("serve still runs 2 minutes after SIGTERM with a 1s grace period\n%s", stderr.String())
	}
	if _, err := io.ReadAll(br); err == nil {
		t.Error("the stream ended cleanly; want it cut")
	}
	select {
	case <-upstreamDone:
	case <-time.After(time.Minute):
		t.Error("the upstream request was not cancelled")
	}
	logs := stderr.String()
	for _, want := range []string{"shutting down", "grace period ended", "outbound stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q:\n%s", want, logs)
		}
	}
}
