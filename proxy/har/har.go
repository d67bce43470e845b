// Package har owns the per-instance traffic trace: a bounded ring of the
// recent requests as the sandbox sent them and the responses as the sandbox
// received them, exported as HAR 1.2 (github.com/google/martian/v3/har types).
//
// The proxy records a request before handing it to the policy, so what a
// handler adds upstream (injected credentials) never enters the trace.
// Bodies are never read: only sizes and content types are recorded.
//
// martian's har.Logger is not used as the store: it has no bound or eviction,
// Export hands out entries that RecordResponse later mutates, and converting
// on the request path costs more than the proxying. A cheap snapshot is kept
// instead and converted with martian's NewRequest/NewResponse on export.
package har

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
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
	entries []*exchange
	next    int // where the next entry goes once full
}

func (r *ring) add(e *exchange, size int) {
	if len(r.entries) < size {
		r.entries = append(r.entries, e)
		return
	}
	r.entries[r.next] = e
	r.next = (r.next + 1) % size
}

// exchange is a cheap snapshot taken on the request path; it becomes a HAR
// entry only when the trace is exported.
type exchange struct {
	id       string
	started  time.Time
	method   string
	url      string
	proto    string
	host     string
	header   http.Header // cloned: a handler may change the request's later
	reqBytes int64
	chunked  bool

	done      bool
	status    int
	resProto  string
	resHeader http.Header
	resBytes  int64
	wait      time.Duration
	total     time.Duration
}

// Record is one exchange being traced.
type Record struct {
	s *Store
	e exchange // one allocation per traced request
}

// Owner is the instance a trace belongs to.
type Owner interface {
	ID() string
	// Alive is false once the instance is deleted; nothing is recorded for
	// it from then on.
	Alive() bool
}

// Begin records req (its method, URL, headers and body size; never its body)
// for inst and returns the record to Finish, or nil when inst is deleted.
// Proxy-Authorization is never kept.
//
// Deleting an instance must mark it dead (Alive false) before calling
// Remove: aliveness is checked under the same lock as Remove takes, so a
// request of a deleted instance can never start a trace that a later
// instance with the same id would inherit.
func (s *Store) Begin(inst Owner, id string, req *http.Request) *Record {
	if s == nil {
		return nil
	}
	instance := inst.ID()
	h := req.Header.Clone()
	h.Del("Proxy-Authorization")
	rec := &Record{s: s, e: exchange{
		id: id, started: time.Now(), method: req.Method, url: req.URL.String(), proto: req.Proto,
		host: req.Host, header: h, reqBytes: req.ContentLength, chunked: len(req.TransferEncoding) > 0,
	}}
	e := &rec.e
	s.mu.Lock()
	if !inst.Alive() {
		s.mu.Unlock()
		return nil
	}
	r := s.rings[instance]
	if r == nil {
		r = &ring{}
		s.rings[instance] = r
	}
	r.add(e, s.size)
	s.mu.Unlock()
	return rec
}

// Finish records the response as sent to the sandbox: its status and headers
// (no body), with bodyBytes the body bytes actually written and wait the
// time until its headers were known. res.Header must not change afterwards.
func (r *Record) Finish(res *http.Response, bodyBytes int64, wait time.Duration) {
	if r == nil {
		return
	}
	total := time.Since(r.e.started)
	r.s.mu.Lock()
	e := &r.e
	e.done, e.status, e.resProto, e.resHeader = true, res.StatusCode, res.Proto, res.Header
	e.resBytes, e.wait, e.total = bodyBytes, wait, total
	r.s.mu.Unlock()
}

// entry converts the snapshot with martian's own conversions.
func (e *exchange) entry() *mhar.Entry {
	u, err := url.Parse(e.url)
	if err != nil {
		u = &url.URL{Opaque: e.url}
	}
	// No body on the request given to martian: it never reads or parses
	// one, and never logs through its own logger.
	hreq, err := mhar.NewRequest(&http.Request{Method: e.method, URL: u, Proto: e.proto, Host: e.host, Header: e.header}, false)
	if err != nil {
		hreq = &mhar.Request{Method: e.method, URL: e.url, HTTPVersion: e.proto}
	}
	hreq.BodySize = e.reqBytes
	if e.reqBytes != 0 || e.chunked {
		mt, _, err := mime.ParseMediaType(e.header.Get("Content-Type"))
		if err != nil {
			mt = ""
		}
		hreq.PostData = &mhar.PostData{MimeType: mt, Params: []mhar.Param{}}
	}
	out := &mhar.Entry{
		ID:              e.id,
		StartedDateTime: e.started.UTC(),
		Request:         hreq,
		Cache:           &mhar.Cache{},
		Timings:         &mhar.Timings{Send: 0, Wait: -1, Receive: -1},
	}
	if !e.done { // still in flight: HAR wants a response object
		out.Response = &mhar.Response{
			Cookies: []mhar.Cookie{}, Headers: []mhar.Header{},
			Content: &mhar.Content{}, HeadersSize: -1, BodySize: -1,
		}
		return out
	}
	hres, err := mhar.NewResponse(&http.Response{StatusCode: e.status, Proto: e.resProto, Header: e.resHeader}, false)
	if err != nil {
		hres = &mhar.Response{Status: e.status, StatusText: http.StatusText(e.status)}
	}
	hres.BodySize = e.resBytes
	if hres.Content != nil {
		hres.Content.Size = e.resBytes
	}
	out.Response = hres
	out.Time = e.total.Milliseconds()
	out.Timings = &mhar.Timings{Send: 0, Wait: e.wait.Milliseconds(), Receive: (e.total - e.wait).Milliseconds()}
	return out
}

// HAR returns the instance's recent traffic as HAR 1.2 JSON, oldest first.
// An instance without traffic gets an empty log.
func (s *Store) HAR(instance string) ([]byte, error) {
	out := &mhar.HAR{Log: &mhar.Log{
		Version: "1.2",
		Creator: &mhar.Creator{Name: "outbound", Version: "1"},
		Entries: []*mhar.Entry{},
	}}
	s.mu.Lock()
	if r := s.rings[instance]; r != nil {
		n := len(r.entries)
		for i := range n {
			out.Log.Entries = append(out.Log.Entries, r.entries[(r.next+i)%n].entry())
		}
	}
	s.mu.Unlock()
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("har: encode trace of instance %q: %w", instance, err)
	}
	return b, nil
}

// Remove forgets the instance's trace. Call it once the instance is no
// longer Alive (see Begin).
func (s *Store) Remove(instance string) {
	s.mu.Lock()
	delete(s.rings, instance)
	s.mu.Unlock()
}
