package platform

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestUnsupportedNamesFeatureAndSystem(t *testing.T) {
	err := Unsupported("--jail", "Linux network namespaces")
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("%v does not wrap errors.ErrUnsupported", err)
	}
	if want := "--jail is Linux-only (this is " + runtime.GOOS + "/" + runtime.GOARCH + "): it needs Linux network namespaces"; err.Error() != want {
		t.Errorf("%q, want %q", err, want)
	}
}

func TestLinuxOnly(t *testing.T) {
	err := LinuxOnly("serve --transparent", "SO_ORIGINAL_DST")
	if runtime.GOOS == "linux" {
		if err != nil {
			t.Fatalf("LinuxOnly on Linux = %v", err)
		}
		return
	}
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "serve --transparent") {
		t.Fatalf("LinuxOnly on %s = %v", runtime.GOOS, err)
	}
}

// The helper parent: starts a long sleep with DieWithParent, writes its
// pid, then waits to be killed.
func TestHelperParent(t *testing.T) {
	pidFile := os.Getenv("PLATFORM_TEST_PID_FILE")
	if pidFile == "" {
		t.Skip("helper process for TestDieWithParent")
	}
	cmd := exec.Command("sleep", "600")
	DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.WriteFile(pidFile+".tmp", []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	os.Rename(pidFile+".tmp", pidFile)
	cmd.Wait()
	os.Exit(0)
}

func TestDieWithParent(t *testing.T) {
	if !DiesWithParent {
		t.Skipf("%s has no parent-death signal: a child outlives a parent killed outright", runtime.GOOS)
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary to run as the child")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	parent := exec.Command(os.Args[0], "-test.run", "^TestHelperParent$")
	parent.Env = append(os.Environ(), "PLATFORM_TEST_PID_FILE="+pidFile)
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	waitFor(t, "the helper's child to start", func() bool {
		b, err := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(string(b))
		return err == nil && pid > 0
	})
	if !alive(pid) {
		t.Fatalf("child %d is not running before its parent dies", pid)
	}
	parent.Process.Kill()
	parent.Wait()
	waitFor(t, "the child to die with its parent", func() bool { return !alive(pid) })
}

// alive is false for a process that is gone or a zombie (its reaper may be
// a PID 1 that never reaps).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !os.IsNotExist(err)
	}
	// The state follows the parenthesised command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// waitFor polls until f is true; the deadline only bounds a broken run.
func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
