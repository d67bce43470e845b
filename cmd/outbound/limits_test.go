package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/jsapi"
	"github.com/outbound-dev/outbound/proxy"
	"github.com/outbound-dev/outbound/proxy/authlimit"
	"github.com/outbound-dev/outbound/proxy/ca"
	"github.com/outbound-dev/outbound/proxy/upstream"
)

// serveConfig parses serve's flags and validates them into a Config, as
// `outbound serve` does before starting anything.
func serveConfig(args ...string) (app.Config, error) {
	var f serveFlags
	fs := newFlags("serve", "serve", "", io.Discard)
	f.register(fs, "127.0.0.1:3128", "127.0.0.1:3129")
	if err := fs.Parse(append([]string{"--script", "x.js", "--state", "/nonexistent"}, args...)); err != nil {
		return app.Config{}, err
	}
	return f.config(io.Discard)
}

func TestLimitFlagsDefaultsAreTheRealOnes(t *testing.T) {
	c, err := serveConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.ReadHeaderTimeout != proxy.DefaultReadHeaderTimeout || c.IdleTimeout != proxy.DefaultIdleTimeout ||
		c.MaxHeaderBytes != proxy.DefaultMaxHeaderBytes || c.MaxConns != proxy.DefaultMaxConns ||
		c.MaxTunnels != proxy.DefaultMaxTunnels || c.MaxBodyBytes != jsapi.DefaultMaxBodyBytes ||
		c.UpstreamResponseHeaderTimeout != upstream.DefaultResponseHeaderTimeout ||
		c.AuthFailRate != authlimit.DefaultRate || c.AuthFailBurst != authlimit.DefaultBurst ||
		c.CAValidity != ca.DefaultValidity || c.InterceptPostQuantum {
		t.Errorf("defaults differ from the packages' own: %+v", c)
	}
}

func TestLimitFlagsReachTheConfig(t *testing.T) {
	c, err := serveConfig("--read-header-timeout", "3s", "--idle-timeout", "1m", "--max-header-bytes", "16KiB",
		"--max-conns", "10", "--max-tunnels", "5", "--max-body-bytes", "1MiB", "--upstream-header-timeout", "7s",
		"--auth-fail-rate", "0.5", "--auth-fail-burst", "3", "--ca-validity", "48h", "--intercept-post-quantum")
	if err != nil {
		t.Fatal(err)
	}
	want := app.Config{
		ReadHeaderTimeout: 3 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		MaxConns: 10, MaxTunnels: 5, MaxBodyBytes: 1 << 20, UpstreamResponseHeaderTimeout: 7 * time.Second,
		AuthFailRate: 0.5, AuthFailBurst: 3, CAValidity: 48 * time.Hour, InterceptPostQuantum: true,
	}
	got := app.Config{
		ReadHeaderTimeout: c.ReadHeaderTimeout, IdleTimeout: c.IdleTimeout, MaxHeaderBytes: c.MaxHeaderBytes,
		MaxConns: c.MaxConns, MaxTunnels: c.MaxTunnels, MaxBodyBytes: c.MaxBodyBytes, UpstreamResponseHeaderTimeout: c.UpstreamResponseHeaderTimeout,
		AuthFailRate: c.AuthFailRate, AuthFailBurst: c.AuthFailBurst, CAValidity: c.CAValidity, InterceptPostQuantum: c.InterceptPostQuantum,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	c, err = serveConfig("--handler-timeout", "9s", "--shutdown-grace", "3s", "--isolates", "3", "--handler-queue", "7")
	if err != nil || c.HandlerTimeout != 9*time.Second || c.ShutdownGrace != 3*time.Second || c.Isolates != 3 || c.HandlerQueue != 7 {
		t.Errorf("handler and shutdown flags: %v, %s %s %d %d", err, c.HandlerTimeout, c.ShutdownGrace, c.Isolates, c.HandlerQueue)
	}
	// off turns the brute-force limit off (a negative rate, for authlimit).
	if c, err := serveConfig("--auth-fail-rate", "off"); err != nil || c.AuthFailRate >= 0 {
		t.Errorf("--auth-fail-rate off: %v, rate %v", err, c.AuthFailRate)
	}
}

// Every bad value is refused with a message that names the flag and the
// value, except a --var's value, which may be a secret.
func TestServeFlagErrorsNameTheInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
		not  string
	}{
		{[]string{"--var", "NOEQUALS"}, []string{"--var", `"NOEQUALS"`, "KEY=VALUE"}, ""},
		{[]string{"--var", "=s3cr3t-value"}, []string{"--var", "KEY", "empty"}, "s3cr3t-value"},
		{[]string{"--max-conns", "0"}, []string{"--max-conns", "0", "at least 1"}, ""},
		{[]string{"--max-tunnels", "-3"}, []string{"--max-tunnels", "-3"}, ""},
		{[]string{"--auth-fail-burst", "0"}, []string{"--auth-fail-burst", "0"}, ""},
		{[]string{"--read-header-timeout", "0s"}, []string{"--read-header-timeout", "0s", "positive"}, ""},
		{[]string{"--idle-timeout", "-1s"}, []string{"--idle-timeout", "-1s"}, ""},
		{[]string{"--upstream-header-timeout", "0s"}, []string{"--upstream-header-timeout"}, ""},
		{[]string{"--ca-validity", "1h"}, []string{"--ca-validity", "1h0m0s", "at least 2h"}, ""},
		{[]string{"--max-body-bytes", "lots"}, []string{"max-body-bytes", `"lots"`, "32MiB"}, ""},
		{[]string{"--max-body-bytes", "0"}, []string{"max-body-bytes", "between"}, ""},
		{[]string{"--max-header-bytes", "3GiB"}, []string{"max-header-bytes", "3GiB", "2GiB"}, ""},
		{[]string{"--auth-fail-rate", "0"}, []string{"auth-fail-rate", `"0"`, "off"}, ""},
		{[]string{"--auth-fail-rate", "NaN"}, []string{"auth-fail-rate", "NaN"}, ""},
		{[]string{"--allow-net", "not-a-cidr"}, []string{"--allow-net", `"not-a-cidr"`, "CIDR"}, ""},
		{[]string{"--handler-timeout", "0s"}, []string{"bad --handler-timeout 0s: must be positive"}, ""},
		{[]string{"--shutdown-grace", "-1s"}, []string{"bad --shutdown-grace -1s: must be positive"}, ""},
		{[]string{"--isolates", "0"}, []string{"bad --isolates 0: must be at least 1"}, ""},
		{[]string{"--handler-queue", "-2"}, []string{"bad --handler-queue -2: must be at least 1"}, ""},
	} {
		_, err := serveConfig(tc.args...)
		if err == nil {
			t.Errorf("%v: accepted", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %q does not say %q", tc.args, err, w)
			}
		}
		if tc.not != "" && strings.Contains(err.Error(), tc.not) {
			t.Errorf("%v: %q shows the value", tc.args, err)
		}
	}
}

// --allow-net takes a CIDR or a bare address (just that address), masked.
func TestAllowNet(t *testing.T) {
	c, err := serveConfig("--allow-net", "10.1.2.3", "--allow-net", "10.9.9.9/8", "--allow-net", "fd00::1")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.AllowNets); got != "[10.1.2.3/32 10.0.0.0/8 fd00::1/128]" {
		t.Fatalf("AllowNets = %s", got)
	}
}

// Through the binary: one line on stderr naming the flag, exit status 2.
func TestVarErrorThroughTheBinary(t *testing.T) {
	_, stderr, code := outbound(t, nil, "serve", "--script", "x.js", "--var", "GREETING")
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, `bad --var "GREETING"`) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"0", "1", "65536", "64KiB", "32MiB", "1.5 GB", "2GiB", "3GiB", "-1", "1e3", "kib", " 5 mib "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseByteSize(s)
		if err != nil {
			return
		}
		if v < 1 || v > maxByteSize {
			t.Fatalf("parseByteSize(%q) = %d, out of range", s, v)
		}
		again, err := parseByteSize(v.String())
		if err != nil || again != v {
			t.Fatalf("round trip of %q: %d -> %q -> %d, %v", s, v, v.String(), again, err)
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"off", "1", "0.5", "0", "-1", "NaN", "Inf", "1e308", "1e-300", "0x1p-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseRate(s)
		if err != nil {
			return
		}
		if v != -1 && (v <= 0 || math.IsInf(float64(v), 0) || math.IsNaN(float64(v))) {
			t.Fatalf("parseRate(%q) = %v", s, v)
		}
		again, err := parseRate(v.String())
		if err != nil || again != v {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, v, v.String(), again, err)
		}
	})
}

// The flags reach a running server: --max-conns caps the proxy listener
// and --ca-validity sets the CA lifetime that the instance view shows.
func TestServeLimitFlagsEndToEnd(t *testing.T) {
	_, api := startServe(t, examplePath("json-block.js"), t.TempDir(), "--max-conns", "1", "--ca-validity", "48h")
	ctx := context.Background()
	created, err := api.Create(ctx, "sbx-1", "")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(created.CAPEM))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life != 49*time.Hour { // backdated an hour for clock skew
		t.Errorf("CA lives %s, want 48h after an hour's backdating", life)
	}
	raw, err := api.Get(ctx, "sbx-1")
	if err != nil {
		t.Fatal(err)
	}
	var view struct {
		CANotAfter time.Time `json:"caNotAfter"`
	}
	if err := json.Unmarshal(raw, &view); err != nil || !view.CANotAfter.Equal(cert.NotAfter) {
		t.Errorf("view caNotAfter %v (%v), want the CA's %v: %s", view.CANotAfter, err, cert.NotAfter, raw)
	}

	st, err := api.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var status struct {
		Proxy struct{ Listen string } `json:"proxy"`
	}
	json.Unmarshal(st, &status)
	// The first connection is accepted and answered (407: no credentials)
	// and stays open; the second is over the cap.
	first, err := net.Dial("tcp", status.Proxy.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.SetDeadline(time.Now().Add(time.Minute))
	io.WriteString(first, "GET http://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(first), nil)
	if err != nil || res.StatusCode != http.StatusProxyAuthRequired {
		t.Fatalf("first connection: %v %v", res, err)
	}
	second, err := net.Dial("tcp", status.Proxy.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetDeadline(time.Now().Add(time.Minute))
	res, err = http.ReadResponse(bufio.NewReader(second), nil)
	if err != nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("connection over --max-conns 1: %v %v, want 503", res, err)
	}
}
