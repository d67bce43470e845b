// Package childenv builds the environment that points a process at its
// instance: proxy variables, CA paths, and the merged CA bundle that tools
// which replace their roots (curl, requests, git) need.
package childenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// CloudflareCAPath is where Cloudflare-built container images expect the
// interception CA.
const CloudflareCAPath = "/etc/cloudflare/certs/cloudflare-containers-ca.crt"

// proxyVars point a client at the proxy.
var proxyVars = []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"}

// instanceCAVars take the instance CA alone: their tools add it to the roots.
var instanceCAVars = []string{"OUTBOUND_CA_CERT", "NODE_EXTRA_CA_CERTS", "DENO_CERT"}

// bundleVars take the merged bundle: their tools replace the roots with it.
var bundleVars = []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT", "CARGO_HTTP_CAINFO", "AWS_CA_BUNDLE"}

// removed are unset so that nothing bypasses the proxy.
var removed = []string{"NO_PROXY", "no_proxy"}

// secretVars are outbound's own secrets, which the parent may hold: the
// admin token, a store URL that may carry the Redis password, and an
// instance token (the child's own is in the proxy variables).
var secretVars = []string{"OUTBOUND_ADMIN_TOKEN", "OUTBOUND_STORE", "OUTBOUND_INSTANCE_TOKEN"}

// Paths of the two files a child needs.
type Paths struct {
	CA     string // the instance CA alone
	Bundle string // system roots plus the instance CA
}

// Vars returns the variables for an instance, in a stable order.
func Vars(id, proxyURL string, p Paths) [][2]string {
	var out [][2]string
	for _, k := range proxyVars {
		out = append(out, [2]string{k, proxyURL})
	}
	out = append(out, [2]string{"NODE_USE_ENV_PROXY", "1"}, [2]string{"OUTBOUND_INSTANCE_ID", id})
	for _, k := range instanceCAVars {
		out = append(out, [2]string{k, p.CA})
	}
	for _, k := range bundleVars {
		out = append(out, [2]string{k, p.Bundle})
	}
	return out
}

// Merge returns base (KEY=VALUE entries, as os.Environ) with the instance
// variables set and the bypass and secret variables removed.
func Merge(base []string, vars [][2]string) []string {
	drop := slices.Concat(removed, secretVars)
	for _, kv := range vars {
		drop = append(drop, kv[0])
	}
	out := make([]string, 0, len(base)+len(vars))
	for _, e := range base {
		k, _, _ := strings.Cut(e, "=")
		if !slices.Contains(drop, k) {
			out = append(out, e)
		}
	}
	for _, kv := range vars {
		out = append(out, kv[0]+"="+kv[1])
	}
	return out
}

// Format renders vars for a shell (sh) or for `docker run --env-file` (docker).
func Format(vars [][2]string, format string) (string, error) {
	var b strings.Builder
	switch format {
	case "sh":
		// The shell this is eval'd into starts the sandbox: it must not
		// hand on outbound's secrets either.
		for _, k := range slices.Concat(removed, secretVars) {
			fmt.Fprintf(&b, "unset %s\n", k)
		}
		for _, kv := range vars {
			fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
		}
	case "docker":
		for _, kv := range vars {
			fmt.Fprintf(&b, "%s=%s\n", kv[0], kv[1])
		}
	default:
		return "", fmt.Errorf("unknown format %q: want sh or docker", format)
	}
	return b.String(), nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// systemRootFiles are the places Debian, Fedora, Alpine, SUSE and others keep
// their bundle, in the order Go itself looks.
var systemRootFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/tls/cacert.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
}

// SystemRoots returns the system's PEM root bundle. SSL_CERT_FILE from the
// parent environment wins, as it does for Go and OpenSSL.
func SystemRoots(env []string) ([]byte, error) {
	files := systemRootFiles
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "SSL_CERT_FILE="); ok && v != "" {
			files = append([]string{v}, files...)
		}
	}
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return b, nil
		}
	}
	return nil, fmt.Errorf("no system CA bundle found (looked in %s)", strings.Join(files, ", "))
}

// WriteFiles writes the instance CA and the merged bundle into dir.
func WriteFiles(dir string, caPEM, systemRoots []byte) (Paths, error) {
	p := Paths{CA: filepath.Join(dir, "instance-ca.pem"), Bundle: filepath.Join(dir, "ca-bundle.pem")}
	if err := os.WriteFile(p.CA, caPEM, 0o644); err != nil {
		return p, fmt.Errorf("writing instance CA: %w", err)
	}
	bundle := append(bytes.TrimRight(slices.Clone(systemRoots), "\n"), '\n')
	bundle = append(bundle, caPEM...)
	if err := os.WriteFile(p.Bundle, bundle, 0o644); err != nil {
		return p, fmt.Errorf("writing CA bundle: %w", err)
	}
	return p, nil
}
