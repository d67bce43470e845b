package proxy

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/outbound-dev/outbound/proxy/har"
)

// handle hands one request to the Backend and writes its response. in is
// the enclosing intercepted tunnel, if any.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, inst Instance, u *url.URL, a *audit, parent *relay) {
	if u.Path == "" {
		u.Path = "/"
	}
	websocket := stripRequest(r.Header)
	ctx := context.WithValue(r.Context(), requestIDKey{}, a.id)
	out := r.WithContext(ctx)
	out.URL = u
	out.Host = u.Host
	out.RequestURI = ""
	out.Close = false
	var body *countingReader
	if r.ContentLength == 0 {
		out.Body = http.NoBody
	} else {
		body = &countingReader{r: r.Body, size: r.ContentLength}
		out.Body = body
	}

	// Recorded before the Backend sees it: nothing a handler adds upstream
	// enters the trace.
	rec := s.opts.HAR.Begin(inst, a.id, out)
	start := time.Now()
	res, oc := s.opts.Backend.Handle(ctx, inst, out)
	wait := time.Since(start)
	s.opts.Metrics.handler(oc.Handler, wait)
	a.step, a.handler, a.err, a.blocked = oc.Step, oc.Handler, oc.Err, oc.Blocked

	if res == nil {
		if a.step == "" {
			a.step = stepNoBackend
		}
		a.status = http.StatusBadGateway
		a.err = errors.Join(a.err, errors.New("backend returned no response"))
		plain(w, a.status, "bad gateway")
		rec.Finish(&http.Response{StatusCode: a.status, Header: http.Header{}}, 0, wait)
		return
	}
	a.status = res.StatusCode
	err := s.writeResponse(w, r, res, websocket, a, rec, wait, parent)
	if body != nil {
		a.bytesIn = body.n.Load()
	}
	if errors.Is(err, errUpstreamBody) {
		// Headers are out; cut the connection (or stream) so the sandbox
		// sees a truncated response rather than a complete short one.
		a.err = errors.Join(a.err, err)
		panic(http.ErrAbortHandler)
	}
}

var errUpstreamBody = errors.New("reading the upstream response body failed")

// writeResponse streams res to the sandbox: hop-by-hop headers stripped,
// every chunk flushed as soon as it arrives. A 101 answering a WebSocket
// request switches to relaying the connection.
func (s *Server) writeResponse(w http.ResponseWriter, r *http.Request, res *http.Response, websocket bool, a *audit, rec *har.Record, wait time.Duration, parent *relay) error {
	if res.Body == nil {
		res.Body = http.NoBody
	}
	if res.Header == nil {
		res.Header = http.Header{}
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		if websocket {
			return s.relayUpgrade(w, r, res, a, rec, wait, parent)
		}
		res.Body.Close()
		a.status = http.StatusBadGateway
		a.err = errors.Join(a.err, errors.New("101 Switching Protocols for a request that asked for no upgrade"))
		plain(w, a.status, "bad gateway")
		rec.Finish(&http.Response{StatusCode: a.status, Header: http.Header{}}, 0, wait)
		return nil
	}
	defer res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 999 {
		a.status = http.StatusBadGateway
		a.err = errors.Join(a.err, fmt.Errorf("unusable response status %d", res.StatusCode))
		plain(w, a.status, "bad gateway")
		return nil
	}

	stripHop(res.Header)
	dst := w.Header()
	for k, vv := range res.Header {
		dst[k] = vv
	}
	if len(res.Trailer) > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	if res.ContentLength >= 0 && dst.Get("Content-Length") == "" && bodyAllowed(res.StatusCode) {
		dst.Set("Content-Length", strconv.FormatInt(res.ContentLength, 10))
	}
	w.WriteHeader(res.StatusCode)
	asSent := *res
	asSent.Proto = r.Proto
	flusher, _ := w.(http.Flusher) // the HTTP/1 and HTTP/2 writers both flush
	// A stream of unknown length (SSE, chunked) gets its headers now: the
	// first event may be a long way off.
	stream := res.ContentLength < 0 || isEventStream(dst)
	if flusher != nil && stream {
		flusher.Flush()
	}
	n, err := copyBody(w, flusher, res.Body, res.ContentLength, stream)
	a.bytesOut = n
	for k, vv := range res.Trailer {
		if _, announced := dst[k]; !announced {
			k = http.TrailerPrefix + k
		}
		dst[k] = vv
	}
	rec.Finish(&asSent, n, wait)
	return err
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	// Most answers are not event streams: skip the parse (it allocates)
	// unless the subtype can be there at all.
	if len(ct) < len("text/event-stream") || !containsFold(ct, "event-stream") {
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// containsFold reports whether s contains the lower-case ASCII sub, ignoring
// ASCII case in s.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for j < len(sub) {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
			j++
		}
		if j == len(sub) {
			return true
		}
	}
	return false
}
