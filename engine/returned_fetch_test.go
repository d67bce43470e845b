package engine

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/handlers/chain"
)

// answers "upstream" for any host but fail.test (a network error) and
// block.test (waits for the request's context).
type stubNet struct{}

func (stubNet) RoundTrip(r *http.Request) (*http.Response, error) {
	switch r.URL.Host {
	case "fail.test":
		return nil, errors.New("connection refused")
	case "block.test":
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return &http.Response{StatusCode: 201, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("upstream")), Request: r}, nil
}

// A handler returning a fetch's promise is answered when the fetch settles,
// whichever way it settles, and the runtime is reused afterwards.
func TestReturnedFetchSettles(t *testing.T) {
	pl := newPool(t, "returned_fetch.js", PoolOptions{Size: 1, Timeout: 2 * time.Second, Fetch: stubNet{}})
	ctx := context.Background()
	tests := []struct {
		handler  string
		status   int
		body     string
		errMatch string
	}{
		{handler: "plain", status: 201, body: "upstream"},
		{handler: "failed", errMatch: "fetch failed: connection refused"},
		{handler: "plain", status: 201, body: "upstream"},
		{handler: "aborted", errMatch: "stopped by the handler"},
		{handler: "observed", status: 200, body: "observed 201"},
		{handler: "observedThenReturned", status: 201, body: "upstream"},
		{handler: "order", status: 200, body: "then"},
		{handler: "thenable", status: 200, body: "via a later then"},
		{handler: "plain", status: 201, body: "upstream"},
	}
	for _, tc := range tests {
		resp, err := pl.Invoke(ctx, call("default", chain.HandlerNamed, tc.handler, httptest.NewRequest("GET", "http://api.test/x", nil)))
		if tc.errMatch != "" {
			var he *HandlerError
			if resp != nil || !errors.As(err, &he) || !strings.Contains(he.Msg, tc.errMatch) {
				t.Fatalf("%s: resp %v, err %v; want a HandlerError containing %q", tc.handler, resp, err, tc.errMatch)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.handler, err)
		}
		if got := readBody(t, resp); resp.StatusCode != tc.status || got != tc.body {
			t.Fatalf("%s: %d %q, want %d %q", tc.handler, resp.StatusCode, got, tc.status, tc.body)
		}
	}
}
