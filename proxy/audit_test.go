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
