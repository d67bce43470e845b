package har

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mhar "github.com/google/martian/v3/har"
)

// inst is an instance incarnation: a new one with the same id is another
// value (a pointer), as in the registry.
type inst struct {
	id   string
	dead atomic.Bool
}

func (i *inst) ID() string  { return i.id }
func (i *inst) Alive() bool { return !i.dead.Load() }

func owner(id string) *inst { return &inst{id: id} }

func decode(t *testing.T, b []byte) *mhar.HAR {
	t.Helper()
	var h mhar.HAR
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("HAR is not JSON: %v\n%s", err, b)
	}
	if h.Log == nil || h.Log.Version != "1.2" {
		t.Fatalf("not a HAR 1.2 log: %s", b)
	}
	return &h
}

func TestRecordNoBodiesNoProxyAuth(t *testing.T) {
	s := NewStore(10)
	pr, pw := io.Pipe() // a streaming body: reading it would block
	t.Cleanup(func() { pw.Close() })
	req, _ := http.NewRequest("POST", "http://example.com:8080/upload?q=1", pr)
	req.ContentLength = -1
	req.TransferEncoding = []string{"chunked"}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Proxy-Authorization", "Basic c2J4OnNlY3JldA==")
	req.Header.Set("X-Sandbox", "mine")

	done := make(chan *Record)
	go func() { done <- s.Begin(owner("sbx-1"), "req-1", req) }()
	var rec *Record
	select {
	case rec = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Begin blocked on a streaming body")
	}
	if req.Header.Get("Proxy-Authorization") == "" {
		t.Error("Begin modified the caller's headers")
	}
	res := &http.Response{StatusCode: 201, Proto: "HTTP/1.1", Header: http.Header{
		"Content-Type": {"text/event-stream"}, "Set-Cookie": {"a=b"},
	}, ContentLength: -1, Body: io.NopCloser(strings.NewReader("never read"))}
	rec.Finish(res, 42, 10*time.Millisecond)

	b, err := s.HAR("sbx-1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "c2J4OnNlY3JldA") || strings.Contains(strings.ToLower(string(b)), "proxy-authorization") {
		t.Fatalf("HAR holds proxy credentials: %s", b)
	}
	if strings.Contains(string(b), "never read") {
		t.Fatal("HAR read a response body")
	}
	h := decode(t, b)
	if len(h.Log.Entries) != 1 {
		t.Fatalf("%d entries", len(h.Log.Entries))
	}
	e := h.Log.Entries[0]
	if e.ID != "req-1" || e.Request.Method != "POST" || e.Request.URL != "http://example.com:8080/upload?q=1" {
		t.Errorf("request %+v", e.Request)
	}
	if e.Request.PostData == nil || e.Request.PostData.MimeType != "application/json" || e.Request.PostData.Text != "" {
		t.Errorf("post data %+v", e.Request.PostData)
	}
	var sawHeader bool
	for _, hd := range e.Request.Headers {
		sawHeader = sawHeader || hd.Name == "X-Sandbox" && hd.Value == "mine"
	}
	if !sawHeader {
		t.Errorf("request headers %+v lack X-Sandbox", e.Request.Headers)
	}
	if e.Response.Status != 201 || e.Response.BodySize != 42 || e.Response.Content.MimeType != "text/event-stream" {
		t.Errorf("response %+v", e.Response)
	}
}

func TestRingBoundedOldestFirst(t *testing.T) {
	s := NewStore(3)
	for i := range 7 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://h/%d", i), nil)
		rec := s.Begin(owner("a"), fmt.Sprint(i), req)
		if i != 6 {
			rec.Finish(&http.Response{StatusCode: 200, Header: http.Header{}}, 0, 0)
		}
	}
	h := decode(t, must(s.HAR("a")))
	var ids []string
	for _, e := range h.Log.Entries {
		ids = append(ids, e.ID)
	}
	if strings.Join(ids, ",") != "4,5,6" {
		t.Fatalf("entries %v, want 4,5,6", ids)
	}
	if last := h.Log.Entries[2]; last.Response == nil || last.Response.Status != 0 {
		t.Errorf("in-flight entry response %+v, want placeholder status 0", last.Response)
	}
}

func TestInstancesSeparateAndRemove(t *testing.T) {
	s := NewStore(0)
	req, _ := http.NewRequest("GET", "http://h/", nil)
	s.Begin(owner("a"), "1", req)
	if n := len(decode(t, must(s.HAR("b"))).Log.Entries); n != 0 {
		t.Fatalf("instance b sees %d of a's entries", n)
	}
	s.Remove("a")
	if n := len(decode(t, must(s.HAR("a"))).Log.Entries); n != 0 {
		t.Fatalf("%d entries after Remove", n)
	}
	var nilStore *Store
	if rec := nilStore.Begin(owner("a"), "1", req); rec != nil {
		t.Fatal("nil store recorded")
	}
	(*Record)(nil).Finish(&http.Response{}, 0, 0) // no panic
}

func TestConcurrentRecordAndExport(t *testing.T) {
	s := NewStore(16)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				req, _ := http.NewRequest("GET", "http://h/", nil)
				rec := s.Begin(owner("a"), fmt.Sprintf("%d-%d", g, i), req)
				rec.Finish(&http.Response{StatusCode: 204, Header: http.Header{}}, 0, 0)
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			if _, err := s.HAR("a"); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if n := len(decode(t, must(s.HAR("a"))).Log.Entries); n != 16 {
		t.Fatalf("%d entries, want 16", n)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// A request of a deleted instance that starts after the delete leaves no
// trace, so a later instance with the same id sees none of its traffic;
// one in flight across the delete finishes into the forgotten ring.
func TestDeletedInstanceLeavesNoTrace(t *testing.T) {
	s := NewStore(10)
	req, _ := http.NewRequest("GET", "http://example.com/old", nil)
	old := owner("sbx")
	inFlight := s.Begin(old, "before-delete", req)

	old.dead.Store(true) // the registry's delete, then the trace's
	s.Remove("sbx")
	if rec := s.Begin(old, "after-delete", req); rec != nil {
		t.Fatal("Begin recorded a request of a deleted instance")
	}
	inFlight.Finish(&http.Response{StatusCode: 200, Header: http.Header{}}, 0, 0)

	reborn := owner("sbx")
	b, err := s.HAR("sbx")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(decode(t, b).Log.Entries); n != 0 {
		t.Fatalf("a new instance with the id inherited %d entries: %s", n, b)
	}
	s.Begin(reborn, "new", req)
	b, _ = s.HAR("sbx")
	if h := decode(t, b); len(h.Log.Entries) != 1 || h.Log.Entries[0].ID != "new" {
		t.Fatalf("the new instance's trace: %s", b)
	}
}
