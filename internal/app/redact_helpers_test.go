package app

import (
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

type urlT = url.URL

func parseURL(s string) (*url.URL, error) { return url.Parse(s) }

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitLog waits for want to be logged: the audit line follows the answer.
func waitLog(t *testing.T, b *syncBuf, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Count(b.String(), want) >= 3 {
			return
		}
	}
	t.Fatalf("log never showed %q three times:\n%s", want, b.String())
}
