package proxy

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

func FuzzCredentials(f *testing.F) {
	for _, s := range []string{basic("a", "t"), "Basic", "basic YTpi", "Basic  YTo=", "Bearer x", "Basic !!", "Basic " + base64.StdEncoding.EncodeToString([]byte("a:b:c"))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r := &http.Request{Header: http.Header{"Proxy-Authorization": {v}}}
		id, token, ok := credentials(r)
		if !ok {
			return
		}
		if id == "" || strings.Contains(id, ":") {
			t.Fatalf("credentials(%q) = %q, %q", v, id, token)
		}
		// What parsed must round-trip through the header it came from.
		r2 := &http.Request{Header: http.Header{"Proxy-Authorization": {basic(id, token)}}}
		id2, token2, ok2 := credentials(r2)
		if !ok2 || id2 != id || token2 != token {
			t.Fatalf("round trip of %q/%q failed", id, token)
		}
	})
}

// TestDecisionBlocked: an event is blocked when the Backend refused the
// request or the proxy did, not when it failed on the way out.
func TestDecisionBlocked(t *testing.T) {
	for _, tc := range []struct {
		a    audit
		want bool
	}{
		{audit{step: "internet", status: 200}, false},
		{audit{step: "denied", status: 520, blocked: true}, true},
		{audit{step: "no_script", status: 503, blocked: true}, true},
		{audit{step: stepOtherHome, status: 421}, true},
		{audit{step: stepAuth, status: 407}, true},
		{audit{step: stepMisdirected, status: 421}, true},
		{audit{step: stepTunnelLimit, status: 503}, true},
		{audit{step: stepDial, status: 502}, false},
		{audit{step: stepNoBackend, status: 502}, false},
		{audit{step: stepHandshake, status: 502}, false},
	} {
		if got := tc.a.decision().Blocked; got != tc.want {
			t.Errorf("step %s: blocked %v, want %v", tc.a.step, got, tc.want)
		}
	}
}
