package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const passthroughScript = "../../testdata/server/passthrough.js"

// TestServeStartupFailures: each way `serve` can fail to start is one line
// on stderr naming the cause, and exit status 1: no panic, no stack trace,
// no wait on a held state dir.
func TestServeStartupFailures(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	inUse := busy.Addr().String()

	fileState := filepath.Join(t.TempDir(), "state-file")
	if err := os.WriteFile(fileState, []byte("not a dir"), 0o600); err != nil {
		t.Fatal(err)
	}
	heldState := t.TempDir()
	holder, _ := startServe(t, passthroughScript, heldState)

	for _, c := range []struct {
		name  string
		args  []string
		wants []string
	}{
		{"proxy port in use", []string{"--listen", inUse},
			[]string{"listen " + inUse + " for the proxy: address already in use"}},
		{"admin port in use", []string{"--admin", inUse},
			[]string{"listen " + inUse + " for the control API: address already in use"}},
		{"missing script", []string{"--script", filepath.Join(t.TempDir(), "nope.js")},
			[]string{"nope.js", "no such file or directory"}},
		{"state is a file", []string{"--state", fileState},
			[]string{"state dir " + fileState + " is not a directory"}},
		{"state held by another serve", []string{"--state", heldState},
			[]string{fmt.Sprintf("state dir %s is in use by another outbound (pid %d)", heldState, holder.Process.Pid)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"serve", "--script", passthroughScript, "--state", t.TempDir(),
				"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}
			args = append(args, c.args...) // a repeated flag: the last one wins
			_, stderr, code := outbound(t, nil, args...)
			if code != 1 {
				t.Errorf("exit status %d, want 1; stderr:\n%s", code, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "outbound serve: ") {
				t.Fatalf("stderr is not one `outbound serve: ...` line:\n%s", stderr)
			}
			for _, w := range c.wants {
				if !strings.Contains(lines[0], w) {
					t.Errorf("stderr %q does not say %q", lines[0], w)
				}
			}
		})
	}
}
