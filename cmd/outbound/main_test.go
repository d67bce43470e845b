package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
	"github.com/outbound-dev/outbound/internal/platform"
)

var binary string

func TestMain(m *testing.M) {
	if url := os.Getenv("OUTBOUND_TEST_WS_CLIENT"); url != "" { // the jail test's client
		os.Exit(wsClientMain(url))
	}
	dir, err := os.MkdirTemp("", "outbound-cli-test-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "outbound")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building outbound:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func examplePath(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "examples", name)
}

// outbound runs the binary and returns stdout, stderr and the exit status.
func outbound(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return outboundIn(t, "", env, args...)
}

// outboundIn is outbound run in dir ("" for the test's own).
func outboundIn(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running outbound %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, c := range commands() {
		out, _, code := outbound(t, nil, c.name, "--help")
		if code != 0 || strings.Count(out, "Usage: outbound "+c.name) != 1 || strings.Count(out, "Example:") != 1 {
			t.Errorf("%s --help: exit %d, output %q", c.name, code, out)
		}
	}
	if out, _, code := outbound(t, nil, "--help"); code != 0 || !strings.Contains(out, "serve") {
		t.Errorf("--help: %d %q", code, out)
	}
}

func TestBadInputIsOneLineAndExit2(t *testing.T) {
	cases := [][]string{
		{"serve", "--no-such-flag"},
		{"serve"}, // --script is required
		{"serve", "--script", "x.js", "--log-format", "xml"},
		{"serve", "--script", "x.js", "--allow-net", "not-a-cidr"},
		{"serve", "--script", "x.js", "--handler-timeout", "soon"},
		{"serve", "--script", "x.js", "--isolates", "0"},
		{"serve", "--script", "x.js", "--handler-queue", "-1"},
		{"run", "--script", "x.js"},                                          // no command
		{"run", "--advertise", "a b:3128", "--script", "x.js", "--", "true"}, // not a host
		{"ctl", "frobnicate"},
		{"env", "--format", "xml", "--id", "x"},
		{"test", "--handler-timeout", "0s"},
		{"test", "--no-such-flag"},
		{"nosuchcommand"},
	}
	for _, args := range cases {
		_, stderr, code := outbound(t, nil, args...)
		if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line", args, code, stderr)
		}
	}
}

func TestCheck(t *testing.T) {
	out, _, code := outbound(t, nil, "check", examplePath("cloudflare-class.ts"))
	if code != 0 || !strings.Contains(out, "class MySandbox") || !strings.Contains(out, "noHttp") {
		t.Fatalf("check: %d %q", code, out)
	}
	// Each class says whether a blocked hook answers its blocks.
	out, _, code = outbound(t, nil, "check", examplePath(filepath.Join("..", "testdata", "engine", "blocked_own_only.js")))
	if code != 0 || !regexp.MustCompile(`(?s)class WithHook\n.*  blocked: true\nclass WithoutHook\n.*  blocked: false\n$`).MatchString(out) {
		t.Fatalf("check of per-class hooks: %d %q", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.js")
	os.WriteFile(bad, []byte("export default {\n  outbound(req) {\n    return new Response(;\n  },\n};\n"), 0o644)
	_, stderr, code := outbound(t, nil, "check", bad)
	if code == 0 || !strings.Contains(stderr, "bad.js:3:") {
		t.Fatalf("check of a broken script: %d %q", code, stderr)
	}
}

// TestTestCommand: `outbound test` finds the test files under the working
// directory, exits 0 when all pass and 1 when one fails, and takes its flags
// before or after the files.
func TestTestCommand(t *testing.T) {
	examples := filepath.Dir(examplePath("x"))
	out, stderr, code := outboundIn(t, examples, nil, "test")
	if code != 0 || !strings.Contains(out, "# github-token.test.js\nok injects the GitHub token\n") || !strings.HasSuffix(out, " passed, 0 failed\n") {
		t.Fatalf("test in examples/: exit %d\n%s%s", code, out, stderr)
	}
	td := filepath.Join(examples, "..", "testdata", "policytest")
	out, _, code = outboundIn(t, td, nil, "test", "fail.test.js", "--script", "policy.js")
	if code != 1 || !strings.Contains(out, "FAIL equal: fail.test.js:6:16: assert.equal: actual 403, expected 200\n") || !strings.HasSuffix(out, "0 passed, 15 failed\n") {
		t.Fatalf("failing file: exit %d\n%s", code, out)
	}
	_, stderr, code = outboundIn(t, td, nil, "test", "missing.test.js")
	if code != 1 || !strings.Contains(stderr, "missing.test.js") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("missing file: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = outboundIn(t, t.TempDir(), nil, "test")
	if code != 1 || !strings.Contains(stderr, "no test files found") {
		t.Fatalf("no test files: exit %d, stderr %q", code, stderr)
	}
}

// githubUpstream is a TLS stand-in for api.github.com that echoes the
// Authorization header it received.
func githubUpstream(t *testing.T) *apptest.TLSUpstream {
	return apptest.NewTLSUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw authorization=%q\n", r.Header.Get("Authorization"))
	}), "api.github.com")
}

// TestRunCurlGetsInjectedToken is the contract's end-to-end check: a real
// curl behind `outbound run` reaches a TLS upstream through the MITM, the
// upstream sees the token, and the child's environment never held it.
func TestRunCurlGetsInjectedToken(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	up := githubUpstream(t)
	const token = "ghp_run_secret_value"
	out, stderr, code := outbound(t, []string{"GITHUB_TOKEN="}, "run",
		"--script", examplePath("github-token.js"),
		"--var", "GITHUB_TOKEN="+token,
		"--connect-to", up.ConnectTo("api.github.com", 443),
		"--upstream-ca", up.CAFile,
		"--", "sh", "-c", curl+` -sS https://api.github.com/user && env`)
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	want := fmt.Sprintf("upstream saw authorization=%q", "Bearer "+token)
	if !strings.Contains(out, want) {
		t.Fatalf("stdout lacks %s:\n%s", want, out)
	}
	env := out[strings.Index(out, want)+len(want):]
	if strings.Contains(env, token) {
		t.Fatalf("the child's environment holds the token")
	}
	for _, k := range []string{"HTTPS_PROXY=http://", "SSL_CERT_FILE=", "NODE_EXTRA_CA_CERTS=", "NODE_USE_ENV_PROXY=1", "OUTBOUND_INSTANCE_ID="} {
		if !strings.Contains(env, k) {
			t.Errorf("child env lacks %s", k)
		}
	}
	if strings.Contains(stderr, token) {
		t.Errorf("the token reached stderr")
	}
}

// TestRunChildrenTrustTheMITM: other runtimes trust the instance CA through
// the variables alone, with no flag of their own.
func TestRunChildrenTrustTheMITM(t *testing.T) {
	up := githubUpstream(t)
	children := map[string][]string{
		"go": {binary, "demo-child", "https://api.github.com/user"},
	}
	if py, err := exec.LookPath("python3"); err == nil {
		children["python"] = []string{py, "-c", `import urllib.request; print(urllib.request.urlopen("https://api.github.com/user").read().decode())`}
	}
	for name, argv := range children {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"run", "--script", examplePath("github-token.js"),
				"--var", "GITHUB_TOKEN=" + demoToken,
				"--connect-to", up.ConnectTo("api.github.com", 443), "--upstream-ca", up.CAFile, "--"}, argv...)
			out, stderr, code := outbound(t, []string{"GITHUB_TOKEN="}, args...)
			if code != 0 || !strings.Contains(out, "upstream saw authorization") {
				t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
			}
		})
	}
}

// TestRunChildGetsNoOutboundSecrets: the admin token, the store URL (a
// Redis password) and an instance token in the wrapper's environment do not
// reach the command.
func TestRunChildGetsNoOutboundSecrets(t *testing.T) {
	checkChildGetsNoSecrets(t, "run")
}

// checkChildGetsNoSecrets runs `env` under `outbound run` with args and
// fails if outbound's secret variables reached it.
func checkChildGetsNoSecrets(t *testing.T, args ...string) {
	t.Helper()
	secrets := map[string]string{
		"OUTBOUND_ADMIN_TOKEN":    "admin-secret-4c1e",
		"OUTBOUND_STORE":          "bolt:" + filepath.Join(t.TempDir(), "store-secret-9b2d.db"),
		"OUTBOUND_INSTANCE_TOKEN": "instance-secret-77af",
	}
	var env []string
	for k, v := range secrets {
		env = append(env, k+"="+v)
	}
	args = append(args, "--script", examplePath("json-block.js"), "--", "env")
	out, stderr, code := outbound(t, env, args...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	if !strings.Contains(out, "OUTBOUND_INSTANCE_ID=") {
		t.Fatalf("the child's env is not the instance's:\n%s", out)
	}
	for k, v := range secrets {
		if strings.Contains(out, k+"=") || strings.Contains(out, v) {
			t.Errorf("%s reached the child", k)
		}
	}
}

func TestRunExitStatusAndTempFiles(t *testing.T) {
	out, _, code := outbound(t, nil, "run", "--script", examplePath("json-block.js"), "--",
		"sh", "-c", `echo "$SSL_CERT_FILE"; exit 7`)
	if code != 7 {
		t.Fatalf("exit %d, want the child's 7", code)
	}
	bundle := strings.TrimSpace(out)
	if bundle == "" {
		t.Fatal("child saw no SSL_CERT_FILE")
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Errorf("temp bundle %s still there after run: %v", bundle, err)
	}
}

func startRun(t *testing.T, script string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binary, "run", "--script", examplePath("json-block.js"), "--", "sh", "-c", script)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// waitFor polls until f is true; the deadline only bounds a broken run.
func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestRunForwardsSignals(t *testing.T) {
	checkForwardsSignals(t, []string{"run", "--script", examplePath("json-block.js")})
}

// checkForwardsSignals runs `outbound ARGS -- sh -c ...` whose command
// traps TERM, signals the wrapper, and wants the command's exit status.
func checkForwardsSignals(t *testing.T, args []string) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(binary, append(args, "--", "sh", "-c", `trap 'exit 42' TERM; touch `+ready+`; while :; do sleep 0.05; done`)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the command to start", func() bool { _, err := os.Stat(ready); return err == nil })
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 42 {
		t.Fatalf("wrapper exit %v, want the command's 42 from its TERM trap", err)
	}
}

func TestKilledWrapperLeavesNothing(t *testing.T) {
	if !platform.DiesWithParent {
		t.Skipf("%s has no parent-death signal: the command outlives a wrapper killed outright", runtime.GOOS)
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd, _ := startRun(t, `echo $$ > `+pidFile+`; while :; do sleep 0.05; done`)
	var pid int
	waitFor(t, "the child's pid", func() bool {
		b, err := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, "the child to die with its wrapper", func() bool {
		return syscall.Kill(pid, 0) == syscall.ESRCH
	})
}

func TestCtlAgainstServer(t *testing.T) {
	srv := apptest.Start(t, app.Config{Script: examplePath("setup-then-lockdown.js"), KV: []string{"K"}})
	admin := srv.AdminAddr().String()
	ctl := func(args ...string) (string, int) {
		out, stderr, code := outbound(t, nil, append([]string{"ctl", "--admin", admin}, args...)...)
		return out + stderr, code
	}
	if out, code := ctl("create", "sbx-1"); code != 0 || !strings.Contains(out, "proxy_url") {
		t.Fatalf("create: %d %s", code, out)
	}
	out, code := ctl("setOutboundHandler", "sbx-1", "allowHosts", `{"allowedHostnames":["github.com"]}`)
	var view struct {
		OutboundHandler struct {
			Method string
			Params struct{ AllowedHostnames []string }
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &view) != nil || view.OutboundHandler.Method != "allowHosts" || view.OutboundHandler.Params.AllowedHostnames[0] != "github.com" {
		t.Fatalf("setOutboundHandler: %d %s", code, out)
	}
	if out, code := ctl("setOutboundHandler", "sbx-1", "nope"); code != 1 || !strings.Contains(out, "Outbound handler method 'nope' not found in outboundHandlers for default") {
		t.Fatalf("unknown handler: %d %s", code, out)
	}
	out, code = ctl("explain", "sbx-1", "https://github.com/x")
	var ex struct {
		Step    int
		Handler *string
		Blocked bool
		Reason  *string
	}
	if code != 0 || json.Unmarshal([]byte(out), &ex) != nil || ex.Step != 5 || ex.Handler == nil || *ex.Handler != "allowHosts" || ex.Blocked || ex.Reason != nil {
		t.Fatalf("explain: %d %s", code, out)
	}
	if out, code := ctl("explain", "sbx-1", "github.com"); code != 1 || !strings.Contains(out, "400") || !strings.Contains(out, "absolute") {
		t.Fatalf("explain of a bare host: %d %s", code, out)
	}
	if out, code := ctl("explain", "sbx-1"); code != 2 || !strings.Contains(out, "usage") {
		t.Fatalf("explain without a URL: %d %s", code, out)
	}
	if out, code := ctl("kv", "put", "K", "a/b", "v"); code != 0 {
		t.Fatalf("kv put: %d %s", code, out)
	}
	if out, code := ctl("kv", "get", "K", "a/b"); code != 0 || out != "v" {
		t.Fatalf("kv get: %d %q", code, out)
	}
	if out, code := ctl("har", "sbx-1"); code != 0 || !strings.Contains(out, `"version"`) {
		t.Fatalf("har: %d %s", code, out)
	}
	if out, code := ctl("list"); code != 0 || !strings.Contains(out, "sbx-1") {
		t.Fatalf("list: %d %s", code, out)
	}
	if out, code := ctl("delete", "sbx-1"); code != 0 {
		t.Fatalf("delete: %d %s", code, out)
	}
	if out, code := ctl("show", "sbx-1"); code != 1 || !strings.Contains(out, "404") {
		t.Fatalf("show after delete: %d %s", code, out)
	}
}

func TestEnvAndCAAttach(t *testing.T) {
	srv := apptest.Start(t, app.Config{Script: examplePath("json-block.js")})
	admin := srv.AdminAddr().String()
	out, stderr, code := outbound(t, nil, "env", "--admin", admin, "--id", "sbx-9", "--dir", t.TempDir())
	if code != 0 || !strings.Contains(out, "export HTTPS_PROXY='http://sbx-9:") || !strings.Contains(out, "unset NO_PROXY") {
		t.Fatalf("env: %d %s %s", code, out, stderr)
	}
	// The token is shown once: a second attach needs it.
	if _, stderr, code := outbound(t, nil, "env", "--admin", admin, "--id", "sbx-9"); code != 1 || !strings.Contains(stderr, "--token") {
		t.Fatalf("second env without token: %d %s", code, stderr)
	}
	pem, _, code := outbound(t, nil, "ca", "--admin", admin, "--id", "sbx-9")
	if code != 0 || !strings.HasPrefix(pem, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("ca: %d %q", code, pem)
	}
}
