package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/outbound-dev/outbound/examples"
	"github.com/outbound-dev/outbound/proxy/ca"
)

const demoToken = "demo-token-not-a-real-secret"

// cmdDemo runs `outbound run` with the github-token example against a local
// TLS server standing in for api.github.com, so it needs no network.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", "demo", "make demo", stdout)
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	dir, err := os.MkdirTemp("", "outbound-demo-")
	if err != nil {
		return fail(stderr, "demo", 1, "%v", err)
	}
	defer os.RemoveAll(dir)

	script, err := examples.FS.ReadFile("github-token.js")
	if err != nil {
		return fail(stderr, "demo", 1, "%v", err)
	}
	scriptPath := filepath.Join(dir, "github-token.js")
	if err := os.WriteFile(scriptPath, script, 0o644); err != nil {
		return fail(stderr, "demo", 1, "%v", err)
	}

	// A stand-in for api.github.com with its own throwaway CA.
	upstreamCA, err := ca.New("demo-upstream", ca.Options{})
	if err != nil {
		return fail(stderr, "demo", 1, "%v", err)
	}
	caFile := filepath.Join(dir, "upstream-ca.pem")
	if err := os.WriteFile(caFile, upstreamCA.CertPEM(), 0o644); err != nil {
		return fail(stderr, "demo", 1, "%v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(stderr, "demo", 1, "%v", err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{
				"upstream":            "local stand-in for api.github.com",
				"path":                r.URL.Path,
				"authorization_seen":  r.Header.Get("Authorization"),
				"injected_by_handler": fmt.Sprint(r.Header.Get("Authorization") == "Bearer "+demoToken),
			})
		}),
		TLSConfig: &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return upstreamCA.Leaf("api.github.com")
		}},
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	self, err := os.Executable()
	if err != nil {
		return fail(stderr, "demo", 1, "%v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	fmt.Fprintf(stdout, "outbound demo\n  script:   examples/github-token.js (embedded)\n  upstream: https://api.github.com served locally on 127.0.0.1:%d\n  child:    an HTTPS client that knows only HTTP_PROXY and the CA bundle\n\n", port)
	// The child must not inherit a real token from this shell.
	os.Unsetenv("GITHUB_TOKEN")
	return cmdRun([]string{
		"--script", scriptPath,
		"--var", "GITHUB_TOKEN=" + demoToken,
		"--connect-to", fmt.Sprintf("api.github.com:443:127.0.0.1:%d", port),
		"--upstream-ca", caFile,
		"--log-level", "warn",
		"--", self, "demo-child", "https://api.github.com/user",
	}, stdout, stderr)
}

// cmdDemoChild is the sandboxed side of the demo: a plain HTTPS client.
func cmdDemoChild(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		return fail(stderr, "demo-child", 2, "want one URL")
	}
	var tokenVars []string
	for _, e := range os.Environ() {
		if strings.Contains(e, demoToken) {
			k, _, _ := strings.Cut(e, "=")
			tokenVars = append(tokenVars, k)
		}
	}
	fmt.Fprintf(stdout, "[child] HTTPS_PROXY=%s\n", redactUserinfo(os.Getenv("HTTPS_PROXY")))
	fmt.Fprintf(stdout, "[child] SSL_CERT_FILE=%s\n", os.Getenv("SSL_CERT_FILE"))
	if len(tokenVars) == 0 {
		fmt.Fprintln(stdout, "[child] my environment holds no GitHub token")
	} else {
		fmt.Fprintf(stdout, "[child] my environment holds the token in %v (this is a bug)\n", tokenVars)
	}
	fmt.Fprintf(stdout, "[child] GET %s\n", args[0])
	resp, err := http.Get(args[0]) // HTTP_PROXY and SSL_CERT_FILE do the rest
	if err != nil {
		return fail(stderr, "demo-child", 1, "%v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Fprintf(stdout, "[child] %s\n%s", resp.Status, body)
	if resp.StatusCode != http.StatusOK || len(tokenVars) > 0 {
		return 1
	}
	fmt.Fprintln(stdout, "\nThe upstream saw the token; the child never had it.")
	return 0
}

func redactUserinfo(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 {
		return u
	}
	return u[:scheme+3] + "ID:***" + u[at:]
}
