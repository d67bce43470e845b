package app

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outbound-dev/outbound/internal/testlog"
	"github.com/outbound-dev/outbound/jsapi"
)

func TestRedactHandlerScrubsEveryShape(t *testing.T) {
	const secret = "sk-live-123456"
	var buf bytes.Buffer
	r := &redactor{}
	env := &jsapi.Env{Vars: map[string]string{"KEY": secret, "FLAG": "on"}}
	src := func() *jsapi.Env { return env }
	r.env.Store(&src)
	log := slog.New(redactHandler{next: slog.NewJSONHandler(&buf, nil), r: r})

	log.With("pre", "x"+secret).WithGroup("g").Info("msg "+secret,
		"s", secret, "err", errors.New("boom "+secret),
		slog.Group("grp", "inner", secret), "any", []string{secret}, "flag", "on")
	out := buf.String()
	if strings.Contains(out, secret) {
		t.Fatalf("secret in log: %s", out)
	}
	if strings.Count(out, "[redacted]") != 6 || !strings.Contains(out, `"flag":"on"`) {
		t.Fatalf("unexpected redaction: %s", out)
	}

	// A rotated env is picked up by the next line.
	buf.Reset()
	env = &jsapi.Env{Vars: map[string]string{"KEY": "rotated-value"}}
	log.Info("now rotated-value and " + secret)
	if strings.Contains(buf.String(), "rotated-value") || !strings.Contains(buf.String(), secret) {
		t.Fatalf("after rotation: %s", buf.String())
	}
}

// TestScriptCannotLogItsSecret: console output and exception text from a
// script go through the same redaction as everything else.
func TestScriptCannotLogItsSecret(t *testing.T) {
	const secret = "api-key-that-must-not-leak"
	var buf testlog.Buffer
	dir := t.TempDir()
	script, _ := filepath.Abs("../../testdata/server/logs-secret.js")
	srv, err := New(context.Background(), Config{
		Script: script, Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", StateDir: dir,
		Vars:   map[string]string{"API_KEY": secret},
		Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	created, err := srv.CreateInstance(ctx, "sbx-1", "")
	if err != nil {
		t.Fatal(err)
	}
	proxyURL := created.ProxyURL
	req, _ := http.NewRequest("GET", "http://api.example/", nil)
	tr := &http.Transport{Proxy: func(*http.Request) (*urlT, error) { return parseURL(proxyURL) }}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Fatalf("status %d, want 500", resp.StatusCode)
	}
	waitLog(t, &buf, "[redacted]")
	if strings.Contains(buf.String(), secret) {
		t.Fatalf("the secret reached the log:\n%s", buf.String())
	}
}
