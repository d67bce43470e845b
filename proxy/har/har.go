// Package har owns the per-instance traffic trace: a bounded ring of the
// recent requests as the sandbox sent them and the responses as the sandbox
// received them, exported as HAR 1.2 (github.com/google/martian/v3/har types).
//
// The proxy records a request before handing it to the policy, so what a
// handler adds upstream (injected credentials) never enters the trace.
// Bodies are never read: only sizes and content types are recorded.
//
// martian's har.Logger is not used as the store: it has no bound or eviction
// and Export hands out entries that RecordResponse later mutates. Its
// NewRequest/NewResponse conversions and HAR types are used as they are.
package har

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"sync"
	"time"

	mhar "github.com/google/martian/v3/har"
)

// DefaultEntries is the ring size per instance.
const DefaultEntries = 500

// Store keeps one ring per instance. Safe for concurrent use.
type Store struct {
	size  int
	mu    sync.Mutex
	rings map[string]*ring
}

// NewStore makes a store keeping the last perInstance exchanges of each
// instance (DefaultEntries if <= 0).
func NewStore(perInstance int) *Store {
	if perInstance <= 0 {
		perInstance = DefaultEntries
	}
	return &Store{size: perInstance, rings: make(map[string]*ring)}
}

type ring struct {
	entries []*mhar.Entry
	next    int // where the next entry goes once full
}

func (r *ring) add(e *mhar.Entry, size int) {
	if len(r.entries) < size {
		r.entries = append(r.entries, e)
		return
	}
	r.entries[r.next] = e
	r.next = (r.next + 1) % size
}

// Record is one exchange being traced.
type Record struct {
	s     *Store
	entry *mhar.Entry
	start time.Time
}

// Begin records req (its method, URL, headers and body size; never its body)
// for instance and returns the record to Finish. Proxy-Authorization must
// already be stripped; it is removed here again in case it was not.
func (s *Store) Begin(instance, id string, req *http.Request) *Record {
	if s == nil {
		return nil
	}
	// A shallow copy without a body: NewRequest then never reads or parses
	// the body, and never logs its Content-Type through martian's logger.
	shallow := *req
	shallow.Body, shallow.ContentLength, shallow.TransferEncoding = nil, 0, nil
	if req.Header.Get("Proxy-Authorization") != "" {
		shallow.Header = req.Header.Clone()
		shallow.Header.Del("Proxy-Authorization")
	}
	hreq, err := mhar.NewRequest(&shallow, false)
	if err != nil { // cannot happen without a body; keep a minimal entry
		hreq = &mhar.Request{Method: req.Method, URL: req.URL.String(), HTTPVersion: req.Proto}
	}
	hreq.BodySize = req.ContentLength
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
		if err != nil {
			mt = ""
		}
		hreq.PostData = &mhar.PostData{MimeType: mt, Params: []mhar.Param{}}
	}
	now := time.Now()
	e := &mhar.Entry{
		ID:              id,
		StartedDateTime: now.UTC(),
		Request:         hreq,
		Cache:           &mhar.Cache{},
		Timings:         &mhar.Timings{Send: 0, Wait: -1, Receive: -1},
	}
	s.mu.Lock()
	r := s.rings[instance]
	if r == nil {
		r = &ring{}
		s.rings[instance] = r
	}
	r.add(e, s.size)
	s.mu.Unlock()
	return &Record{s: s, entry: e, start: now}
}

// Finish records the response as sent to the sandbox: its status and headers
// (no body), with bodyBytes the body bytes actually written and wait the
// time until its headers were known.
func (r *Record) Finish(res *http.Response, bodyBytes int64, wait time.Duration) {
	if r == nil {
		return
	}
	hres, err := mhar.NewResponse(res, false)
	if err != nil {
		hres = &mhar.Response{Status: res.StatusCode, StatusText: http.StatusText(res.StatusCode)}
	}
	hres.BodySize = bodyBytes
	if hres.Content != nil {
		hres.Content.Size = bodyBytes
	}
	total := time.Since(r.start)
	r.s.mu.Lock()
	r.entry.Response = hres
	r.entry.Time = total.Milliseconds()
	r.entry.Timings = &mhar.Timings{Send: 0, Wait: wait.Milliseconds(), Receive: (total - wait).Milliseconds()}
	r.s.mu.Unlock()
}

// HAR returns the instance's recent traffic as HAR 1.2 JSON, oldest first.
// An instance without traffic gets an empty log.
func (s *Store) HAR(instance string) ([]byte, error) {
	s.mu.Lock()
	var entries []mhar.Entry
	if r := s.rings[instance]; r != nil {
		n := len(r.entries)
		for i := range n {
			// Copy under the lock: Finish replaces fields, never mutates
			// what they point to.
			entries = append(entries, *r.entries[(r.next+i)%n])
		}
	}
	s.mu.Unlock()

	out := &mhar.HAR{Log: &mhar.Log{
		Version: "1.2",
		Creator: &mhar.Creator{Name: "outbound", Version: "1"},
		Entries: make([]*mhar.Entry, 0, len(entries)),
	}}
	for i := range entries {
		e := &entries[i]
		if e.Response == nil { // still in flight: HAR wants a response object
			e.Response = &mhar.Response{
				Cookies: []mhar.Cookie{}, Headers: []mhar.Header{},
				Content: &mhar.Content{}, HeadersSize: -1, BodySize: -1,
			}
		}
		out.Log.Entries = append(out.Log.Entries, e)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("har: encode trace of instance %q: %w", instance, err)
	}
	return b, nil
}

// Remove forgets the instance's trace (on instance delete).
func (s *Store) Remove(instance string) {
	s.mu.Lock()
	delete(s.rings, instance)
	s.mu.Unlock()
}
