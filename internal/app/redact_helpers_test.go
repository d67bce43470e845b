package app

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/testlog"
)

type urlT = url.URL

func parseURL(s string) (*url.URL, error) { return url.Parse(s) }

// waitLog waits for want to be logged: the audit line follows the answer.
func waitLog(t *testing.T, b *testlog.Buffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Count(b.String(), want) >= 3 {
			return
		}
	}
	t.Fatalf("log never showed %q three times:\n%s", want, b.String())
}
