package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/proxy/control/client"
)

// startServe runs `outbound serve` on ephemeral ports, with any extra
// flags, and returns the process and its control API client once it is
// ready.
func startServe(t *testing.T, script, state string, extra ...string) (*exec.Cmd, *client.Client) {
	t.Helper()
	p := serveProc(t, append([]string{"--script", script, "--state", state, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, extra...)...)
	return p.cmd, p.admin
}

// served is a running `outbound serve`.
type served struct {
	cmd          *exec.Cmd
	admin        *client.Client
	proxy, adv   string // the proxy listener and the advertised address
	adminAddress string
}

// serveProc runs `outbound serve` with args (and JSON logs) and returns it
// once GET /v1/status answers. It is killed at the test's end.
func serveProc(t *testing.T, args ...string) served {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// The serving line names the actual addresses.
	ready := make(chan served, 1)
	exited := make(chan string, 1)
	go func() {
		var log strings.Builder
		defer func() { exited <- log.String() }()
		sc := bufio.NewScanner(stderr)
		field := func(line, name string) string {
			m := regexp.MustCompile(`"` + name + `":"([^"]+)"`).FindStringSubmatch(line)
			if m == nil {
				return ""
			}
			return m[1]
		}
		for sc.Scan() {
			line := sc.Text()
			if log.Len() < 64<<10 {
				log.WriteString(line + "\n")
			}
			if field(line, "admin") != "" {
				ready <- served{cmd: cmd, proxy: field(line, "proxy"), adv: field(line, "advertise"), adminAddress: field(line, "admin")}
			}
		}
	}()
	select {
	case s := <-ready:
		s.admin = client.New(s.adminAddress, "")
		waitFor(t, "GET /v1/status to answer", func() bool {
			_, err := s.admin.Status(context.Background())
			return err == nil
		})
		return s
	case log := <-exited:
		t.Fatalf("outbound serve %v exited before serving:\n%s", args, log)
	case <-time.After(60 * time.Second):
		t.Fatal("outbound serve did not log its addresses")
	}
	return served{}
}

// writeUntilStopped calls write(0), write(1), … until stop is closed or a
// write fails (the server died mid-call: that one is not acknowledged).
// The returned channel is closed when it has stopped.
func writeUntilStopped(stop <-chan struct{}, write func(i int) error) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if write(i) != nil {
				return
			}
		}
	}()
	return done
}

// TestKill9LosesNoAcknowledgedChange: the server is killed with SIGKILL in
// the middle of a stream of control API writes; after a restart on the same
// state dir every acknowledged change is there and the store opens.
func TestKill9LosesNoAcknowledgedChange(t *testing.T) {
	state := t.TempDir()
	script := examplePath("setup-then-lockdown.js")
	ctx := context.Background()
	cmd, c := startServe(t, script, state)
	if _, err := c.Create(ctx, "sbx-1", ""); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	writerDone := writeUntilStopped(stop, func(i int) error {
		h := fmt.Sprintf("h%d.example.com", i)
		arg, _ := json.Marshal(h)
		if _, err := c.Call(ctx, "sbx-1", "allowHost", []json.RawMessage{arg}); err != nil {
			return err
		}
		mu.Lock()
		acked = append(acked, h)
		mu.Unlock()
		return nil
	})
	// Killed mid-stream, once some writes are in however slow the machine.
	waitFor(t, "some writes to be acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 10
	})
	cmd.Process.Kill()
	cmd.Wait()
	close(stop)
	<-writerDone
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before the kill")
	}

	_, c2 := startServe(t, script, state)
	raw, err := c2.Get(ctx, "sbx-1")
	if err != nil {
		t.Fatalf("instance lost after kill -9: %v", err)
	}
	var view struct{ AllowedHosts []string }
	if err := json.Unmarshal(raw, &view); err != nil {
		t.Fatal(err)
	}
	for _, h := range acked {
		if !slices.Contains(view.AllowedHosts, h) {
			t.Fatalf("acknowledged allowHost(%q) lost after kill -9 (%d acknowledged, %d restored)", h, len(acked), len(view.AllowedHosts))
		}
	}
	t.Logf("%d acknowledged writes before SIGKILL, all restored (%d hosts in the list)", len(acked), len(view.AllowedHosts))
}
