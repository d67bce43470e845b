package app_test

import (
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// Hostile scripts: each misbehaving request gets its own error, another
// instance keeps being served meanwhile, and no goroutine outlives them.
func TestHostileScripts(t *testing.T) {
	slow, _ := countingUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	srv := apptest.Start(t, app.Config{
		Script:         securityDir + "hostile.js",
		HandlerTimeout: time.Second, // room for the 200 cases under -race on a loaded machine
		ConnectTo:      []string{"slow.test:80:" + upstreamIP + ":" + portOf(slow)},
		Vars:           map[string]string{"SECRET": "s3cr3t-hostile"},
	})
	bad := apptest.Client(t, srv.Create(t, "bad", ""))
	good := apptest.Client(t, srv.Create(t, "good", ""))
	if code, body := call(t, good, "GET", "http://any.test/ok", nil); code != 200 || body != "ok good" {
		t.Fatalf("warm-up: %d %q", code, body)
	}
	base := runtime.NumGoroutine()

	for _, tc := range []struct {
		path string
		want int
	}{
		{"/loop", 504},
		{"/regex", 504},
		{"/recurse", 500},
		{"/big-array", 500},
		{"/big-string", 500},
		{"/grow", 504},
		{"/hang", 504},
		{"/timers", 200},
		{"/timers-hang", 504},
		{"/fetch-storm", 200},
		{"/fetch-storm-wait", 504},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			// The other instance is served while this one misbehaves.
			var wg sync.WaitGroup
			stop := make(chan struct{})
			var goodErr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					resp, err := good.Get("http://any.test/ok")
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode != 200 {
							err = &statusErr{resp.StatusCode}
						} else if d := time.Since(start); d > 2*time.Second {
							err = &slowErr{d}
						}
					}
					if err != nil {
						goodErr = err
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			code, body := call(t, bad, "GET", "http://any.test"+tc.path, nil)
			close(stop)
			wg.Wait()
			if code != tc.want {
				t.Errorf("%s: got %d %q, want %d", tc.path, code, body, tc.want)
			}
			if goodErr != nil {
				t.Errorf("another instance during %s: %v", tc.path, goodErr)
			}
		})
	}
	if code, body := call(t, bad, "GET", "http://any.test/ok", nil); code != 200 || body != "ok bad" {
		t.Errorf("the hostile instance afterwards: %d %q", code, body)
	}
	bad.CloseIdleConnections()
	good.CloseIdleConnections()
	waitGoroutines(t, base)
}

type statusErr struct{ code int }

func (e *statusErr) Error() string { return "status " + http.StatusText(e.code) }

type slowErr struct{ d time.Duration }

func (e *slowErr) Error() string { return "answered after " + e.d.String() }
