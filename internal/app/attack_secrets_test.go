package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// Secret leakage: no answer the sandbox gets, no control API answer and no
// log line (at debug level) carries an env value or an instance token.
func TestSecretsNeverLeak(t *testing.T) {
	const secret = "s3cr3t-leak-canary-4711"
	_, refusedHits := countingUpstream(t, nil)
	_ = refusedHits
	srv := apptest.Start(t, app.Config{
		Script:         securityDir + "hostile.js",
		HandlerTimeout: 500 * time.Millisecond,
		// A port nothing listens on: fetch gets "connection refused".
		ConnectTo: []string{"refused.test:80:" + upstreamIP + ":1"},
		Vars:      map[string]string{"SECRET": secret},
	})
	created := srv.Create(t, "sbx-1", "")
	id, token := credsOf(t, created)
	c := apptest.Client(t, created)

	var captured strings.Builder
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/throw", 500},
		{"/reject", 500},
		{"/not-a-response", 500},
		{"/hang", 504},
		{"/fetch-refused", 500},
	} {
		req, _ := http.NewRequest("GET", "http://any.test"+tc.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want && !(tc.path == "/fetch-refused" && resp.StatusCode == 502) {
			t.Errorf("%s: %d %q, want %d", tc.path, resp.StatusCode, b, tc.want)
		}
		captured.WriteString(tc.path + " " + resp.Status + "\n")
		resp.Header.Write(&captured)
		captured.Write(b)
	}
	// A 407 (wrong token) and a 502 from the proxy's own forwarding path.
	bad := apptest.ClientWithRoots(t, "http://"+id+":"+secret+"@"+srv.ProxyAddr().String(), nil)
	code, body := call(t, bad, "GET", "http://any.test/ok", nil)
	if code != 407 {
		t.Errorf("wrong token: %d", code)
	}
	captured.WriteString(body)

	// The control API: status, list, view, HAR, metrics.
	ctx := context.Background()
	for _, p := range []string{"/v1/status", "/v1/instances", "/v1/instances/sbx-1", "/v1/instances/sbx-1/har", "/metrics"} {
		resp, err := http.Get("http://" + srv.AdminAddr().String() + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d %s", p, resp.StatusCode, b)
		}
		captured.WriteString(p + "\n")
		captured.Write(b)
	}
	if v, err := srv.Admin.Status(ctx); err == nil {
		j, _ := json.Marshal(v)
		captured.Write(j)
	}

	all := captured.String()
	logs := srv.Log.String()
	for name, s := range map[string]string{"captured answers": all, "log": logs} {
		if strings.Contains(s, secret) {
			t.Errorf("the secret reached the %s:\n%s", name, around(s, secret))
		}
		if strings.Contains(s, token) {
			t.Errorf("the instance token reached the %s:\n%s", name, around(s, token))
		}
		if strings.Contains(s, "PRIVATE KEY") {
			t.Errorf("a private key reached the %s", name)
		}
	}
	// The answers after creation never repeat the token or the CA key.
	if strings.Contains(all, "proxy_url") {
		t.Errorf("an answer after creation carries proxy_url")
	}
}

// around shows where needle sits in s.
func around(s, needle string) string {
	i := strings.Index(s, needle)
	lo, hi := max(0, i-200), min(len(s), i+len(needle)+100)
	return s[lo:hi]
}
