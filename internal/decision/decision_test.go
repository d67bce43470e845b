package decision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
)

func TestFailure(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithTimeout(context.Background(), 0)
	defer cancel2()
	bg := context.Background()
	timeoutErr := &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		err    error
		status int
		body   string
	}{
		{"refused", bg, fmt.Errorf("dial: %w", syscall.ECONNREFUSED), 502, "Upstream unreachable"},
		{"dial timeout", bg, timeoutErr, 504, "Upstream timed out"},
		{"deadline", bg, context.DeadlineExceeded, 504, "Upstream timed out"},
		{"request deadline passed", expired, errors.New("x"), 504, "Upstream timed out"},
		{"sandbox hung up", canceled, context.Canceled, 499, "Client closed request"},
		{"other", bg, errors.New("tls: bad certificate"), 502, "Upstream unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Failure(tc.ctx, nil, tc.err)
			b, _ := io.ReadAll(r.Body)
			if r.StatusCode != tc.status || string(b) != tc.body || FailureStatus(tc.ctx, tc.err) != tc.status {
				t.Fatalf("Failure = %d %q, want %d %q", r.StatusCode, b, tc.status, tc.body)
			}
		})
	}
}

func TestFixedAnswers(t *testing.T) {
	b := Blocked(nil)
	body, _ := io.ReadAll(b.Body)
	if b.StatusCode != 520 || string(body) != BlockedBody || b.ContentLength != int64(len(BlockedBody)) {
		t.Fatalf("Blocked = %d %q", b.StatusCode, body)
	}
	a := AuthRequired(nil)
	if a.StatusCode != http.StatusProxyAuthRequired || a.Header.Get("Proxy-Authenticate") != `Basic realm="outbound"` {
		t.Fatalf("AuthRequired = %d %v", a.StatusCode, a.Header)
	}
}
