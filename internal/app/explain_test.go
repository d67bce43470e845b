package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
	"github.com/outbound-dev/outbound/internal/testlog"
)

// audits returns the proxy's request records of one instance from a JSON
// log.
func audits(logs *testlog.Buffer, instance string) []auditRecord {
	var out []auditRecord
	for _, line := range strings.Split(logs.String(), "\n") {
		var r auditRecord
		if json.Unmarshal([]byte(line), &r) == nil && r.Msg == "request" && r.Instance == instance {
			out = append(out, r)
		}
	}
	return out
}

type auditRecord struct {
	Msg, Instance, Method, Host, Path, Step, Handler string
	Port, Status                                     int
}

type explanation struct {
	Step    int
	Handler *string
	Blocked bool
	Reason  *string
}

// TestExplainAgreesWithTraffic: for a table of instances and URLs, what
// POST /v1/instances/{id}/explain answers is what happens to the same
// request sent through the proxy, as its audit record shows: the same step,
// the same handler, blocked exactly when it is refused. HTTP, intercepted
// HTTPS, raw tunnels and refused CONNECTs are all covered.
func TestExplainAgreesWithTraffic(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream") }))
	t.Cleanup(plain.Close)
	plainPort := plain.Listener.Addr().String()[len("127.0.0.1:"):]
	tlsUp := apptest.NewTLSUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream") }),
		"fwd.test", "raw.test", "api.allowed.test")
	logs := &testlog.Buffer{}
	srv := apptest.Start(t, app.Config{
		Script: "../../testdata/server/explain.js",
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		ConnectTo: []string{
			"fwd.test:80:127.0.0.1:" + plainPort,
			"allowed.test:80:127.0.0.1:" + plainPort,
			tlsUp.ConnectTo("fwd.test", 443),
			tlsUp.ConnectTo("raw.test", 8443),
			tlsUp.ConnectTo("api.allowed.test", 443),
		},
		UpstreamCA: []string{tlsUp.CAFile},
	})
	upstreamCA, err := os.ReadFile(tlsUp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	tests := []struct {
		class string
		calls [][]string // runtime methods: name, then JSON arguments
		url   string
		step  chain.Step // what the table means; agreement is the point
	}{
		{"Open", nil, "http://byhost.test/", chain.StepByHost},
		{"Open", nil, "https://byhost.test/", chain.StepByHost},
		{"Open", nil, "https://a.glob.test/", chain.StepByHost},
		{"Open", nil, "http://evil.test/", chain.StepDenied},
		{"Open", nil, "https://evil.test/", chain.StepDenied},
		{"Open", nil, "https://evil.test:8443/", chain.StepDenied},
		{"Open", nil, "http://fwd.test/", chain.StepInternet},
		{"Open", nil, "https://fwd.test/", chain.StepInternet},
		{"Open", nil, "https://raw.test:8443/", chain.StepInternet},
		{"Open", [][]string{{"setOutboundHandler", `"named"`}}, "http://fwd.test/", chain.StepOutboundRuntime},
		{"Open", [][]string{{"setOutboundByHost", `"*.test"`, `"other"`}}, "http://byhost.test/", chain.StepByHostRuntime},
		{"Open", [][]string{{"setDeniedHosts", `["fwd.test"]`}}, "https://fwd.test/", chain.StepDenied},
		{"Closed", nil, "http://api.allowed.test/", chain.StepOutbound},
		{"Closed", nil, "https://api.allowed.test/", chain.StepAllowedFallback},
		{"Closed", nil, "http://other.test/", chain.StepNotAllowed},
		{"Closed", nil, "https://other.test/", chain.StepNotAllowed},
		{"Closed", nil, "https://allowed.test:8443/", chain.StepDefaultDeny},
		{"Closed", [][]string{{"allowHost", `"other.test"`}}, "http://other.test/", chain.StepOutbound},
		{"Plain", nil, "http://allowed.test/", chain.StepAllowedFallback},
		{"Plain", nil, "http://nope.test/", chain.StepNotAllowed},
		{"Plain", [][]string{{"setAllowedHosts", `[]`}}, "http://allowed.test/", chain.StepNotAllowed},
		{"Plain", [][]string{{"setOutboundHandler", `"named"`, `{"x":1}`}}, "http://allowed.test/", chain.StepOutboundRuntime},
	}
	for i, tt := range tests {
		id := "case-" + strconv.Itoa(i)
		t.Run(fmt.Sprintf("%s %s %s", tt.class, tt.url, tt.step), func(t *testing.T) {
			created := srv.Create(t, id, tt.class)
			for _, c := range tt.calls {
				var args []json.RawMessage
				for _, a := range c[1:] {
					args = append(args, json.RawMessage(a))
				}
				if _, err := srv.Admin.Call(ctx, id, c[0], args); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := srv.Admin.Explain(ctx, id, tt.url)
			if err != nil {
				t.Fatal(err)
			}
			var e explanation
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			if chain.Step(e.Step) != tt.step {
				t.Errorf("explain: step %d (%s), the table says %s", e.Step, chain.Step(e.Step), tt.step)
			}

			// The same request, live. Closing the client's connections ends
			// any tunnel, whose record is written when it closes.
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM([]byte(created.CAPEM))
			roots.AppendCertsFromPEM(upstreamCA)
			proxyURL, _ := url.Parse(created.ProxyURL)
			tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: roots}}
			status, body := call(t, &http.Client{Transport: tr, Timeout: 30 * time.Second}, "GET", tt.url, nil)
			tr.CloseIdleConnections()
			https := strings.HasPrefix(tt.url, "https:")
			var rec auditRecord
			waitUntil(t, "the request's audit record", func() bool {
				recs := audits(logs, id)
				var connect, inner *auditRecord
				for i := range recs {
					if recs[i].Method == "CONNECT" {
						connect = &recs[i]
					} else {
						inner = &recs[i]
					}
				}
				switch {
				case https && connect == nil:
					return false // the tunnel's record comes last
				case inner != nil:
					rec = *inner
				case connect != nil:
					rec = *connect
				default:
					return false
				}
				return true
			})

			handler := ""
			if e.Handler != nil {
				handler = *e.Handler
			}
			if rec.Step != chain.Step(e.Step).String() || rec.Handler != handler {
				t.Fatalf("explain says step %s handler %q; the proxy decided step %s handler %q (status %d %q)",
					chain.Step(e.Step), handler, rec.Step, rec.Handler, status, body)
			}
			refused := status == 520 || status == 451 || (https && status == 0) // a refused CONNECT fails the client
			if e.Blocked != refused || e.Blocked != (e.Reason != nil) {
				t.Fatalf("explain says blocked %v reason %v; the request got %d %q", e.Blocked, e.Reason, status, body)
			}
			if !e.Blocked && e.Step >= 7 && body != "upstream" {
				t.Fatalf("step %d forwards, but the request got %d %q", e.Step, status, body)
			}
		})
	}
}

// TestExplainErrors: the control API's answers when there is nothing to
// explain.
func TestExplainErrors(t *testing.T) {
	srv := apptest.Start(t, app.Config{Script: "../../testdata/server/explain.js"})
	srv.Create(t, "sbx", "Open")
	ctx := context.Background()
	for _, tc := range []struct {
		id, url string
		status  int
		msg     string
	}{
		{"nope", "http://x.test/", 404, "no instance"},
		{"sbx", "x.test", 400, "absolute"},
		{"sbx", "ftp://x.test/", 400, "scheme"},
	} {
		_, err := srv.Admin.Explain(ctx, tc.id, tc.url)
		if err == nil || !strings.Contains(err.Error(), strconv.Itoa(tc.status)) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("explain %s %s: %v, want %d %q", tc.id, tc.url, err, tc.status, tc.msg)
		}
	}
}
