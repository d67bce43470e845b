package policytest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/jsapi"
)

// maxMockBody caps a request body that a mock is shown.
const maxMockBody = jsapi.DefaultMaxBodyBytes

// router is the only http.RoundTripper of a test run: it carries every
// handler fetch, every forward at steps 7 and 8, every opaque tunnel and
// the test file's own fetch. Each request is answered by the first mock of
// its test that matches, or fails the test as "unmocked fetch"; nothing is
// ever dialed.
type router struct{}

// fetchFailure is the error of a request that failed the test already: no
// mock matched it, or its mock's responder failed.
type fetchFailure struct{ msg string }

func (e *fetchFailure) Error() string { return e.msg }

type answer struct {
	resp *http.Response
	err  error
}

func (router) RoundTrip(req *http.Request) (*http.Response, error) {
	ci, _ := req.Context().Value(callKey{}).(*callInfo)
	if req.Body != nil {
		defer req.Body.Close()
	}
	if ci == nil {
		return nil, &fetchFailure{fmt.Sprintf("unmocked fetch: %s %s (outside a test)", req.Method, req.URL)}
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(req.Body, maxMockBody+1))
		if err != nil {
			return nil, fmt.Errorf("reading the body of %s %s: %w", req.Method, req.URL, err)
		}
		if len(b) > maxMockBody {
			return nil, fmt.Errorf("the body of %s %s is larger than %d bytes", req.Method, req.URL, maxMockBody)
		}
		body = b
	}
	s := ci.tr.sess
	ch := make(chan answer, 1)
	if !s.onLoop(ci.tr, func() { s.answer(ci, req, body, ch) }) {
		return nil, errSessionClosed
	}
	select {
	case a := <-ch:
		return a.resp, a.err
	case <-req.Context().Done():
		return nil, req.Context().Err()
	case <-s.dead:
		return nil, errSessionClosed
	}
}

// mock is one mockFetch.
type mock struct {
	pattern   string
	glob      urlGlob
	responder goja.Value // a function, or a Response cloned for each call
	calls     *goja.Object
}

// mockJS is the native of mockFetch(pattern, responder): a mock made in a
// test is that test's; one made at the top level serves every test.
func (s *session) mockJS(call goja.FunctionCall) goja.Value {
	pattern := call.Argument(0).String()
	g, err := parseGlob(pattern)
	if err != nil {
		panic(s.vm.NewTypeError("mockFetch: " + err.Error()))
	}
	calls, _ := call.Argument(2).(*goja.Object)
	m := &mock{pattern: pattern, glob: g, responder: call.Argument(1), calls: calls}
	switch {
	case s.cur != nil:
		s.cur.mocks = append(s.cur.mocks, m)
	case s.registering:
		s.fileMocks = append(s.fileMocks, m)
	default:
		panic(s.vm.NewTypeError("mockFetch() must be called at the top level of a test file or inside a test"))
	}
	return goja.Undefined()
}

// findMock returns the first mock of the test, then of the file, whose
// pattern matches u.
func (s *session) findMock(tr *testRun, u *url.URL) *mock {
	target := matchTarget(u)
	for _, list := range [][]*mock{tr.mocks, s.fileMocks} {
		for _, m := range list {
			if m.glob.match(target) {
				return m
			}
		}
	}
	return nil
}

// answer runs on the loop: it records the request in the matching mock's
// calls, calls its responder and hands the Response back.
func (s *session) answer(ci *callInfo, req *http.Request, body []byte, ch chan<- answer) {
	tr := ci.tr
	where := ci.where
	if where == "" {
		where = tr.tc.where
	}
	if tr.ended {
		ch <- answer{err: errSessionClosed}
		return
	}
	m := s.findMock(tr, req.URL)
	if m == nil {
		msg := fmt.Sprintf("unmocked fetch: %s %s", req.Method, req.URL)
		tr.fail(where + ": " + msg)
		ch <- answer{err: &fetchFailure{msg}}
		return
	}
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf("mockFetch(%q): ", m.pattern) + fmt.Sprintf(format, args...)
		tr.fail(where + ": " + msg)
		ch <- answer{err: &fetchFailure{msg}}
	}
	if m.calls != nil {
		if push, ok := goja.AssertFunction(m.calls.Get("push")); ok {
			if _, err := push(m.calls, s.realm.NewRequest(copyRequest(req, body))); err != nil {
				fail("recording the call: %v", err)
				return
			}
		}
	}
	var v goja.Value
	var err error
	if fn, ok := goja.AssertFunction(m.responder); ok {
		v, err = fn(goja.Undefined(), s.realm.NewRequest(copyRequest(req, body)))
	} else if o, ok := m.responder.(*goja.Object); ok {
		clone, _ := goja.AssertFunction(o.Get("clone"))
		if clone == nil {
			fail("the responder is not a function or a Response")
			return
		}
		v, err = clone(o)
	}
	if err != nil {
		_, msg := s.explainThrown(exceptionValue(err), nil)
		fail("the responder threw %s", msg)
		return
	}
	s.await(v, func(val goja.Value, rejected bool) {
		if rejected {
			_, msg := s.explainThrown(val, nil)
			fail("the responder's promise rejected: %s", msg)
			return
		}
		if !s.realm.IsResponse(val) {
			fail("the responder must return a Response, not %s", jsapi.Describe(val))
			return
		}
		resp, err := s.realm.ToResponse(val, req)
		if err != nil {
			fail("the responder's Response cannot be used: %v", err)
			return
		}
		ch <- answer{resp: resp}
	})
}

func exceptionValue(err error) goja.Value {
	var ex *goja.Exception
	if errors.As(err, &ex) {
		return ex.Value()
	}
	return goja.Undefined()
}

// copyRequest is req with its own copy of the headers and the body, so a
// mock's calls and its responder each read it.
func copyRequest(req *http.Request, body []byte) *http.Request {
	c := req.Clone(req.Context())
	c.Body = http.NoBody
	if body != nil {
		c.Body = io.NopCloser(bytes.NewReader(body))
		c.ContentLength = int64(len(body))
	}
	return c
}

// urlGlob is a mockFetch pattern: '*' matches any run of characters,
// slashes included; everything else matches itself. A pattern without a
// scheme matches URLs without theirs, and a pattern that names only an
// origin matches its root path.
type urlGlob struct {
	scheme bool     // the pattern has a scheme
	parts  []string // the literal runs between stars
	lead   bool     // starts with '*'
	trail  bool     // ends with '*'
}

func parseGlob(p string) (urlGlob, error) {
	if p == "" {
		return urlGlob{}, errors.New("empty pattern")
	}
	if strings.ContainsAny(p, " \t\r\n") {
		return urlGlob{}, fmt.Errorf("pattern %q contains white space", p)
	}
	g := urlGlob{scheme: strings.Contains(p, "://")}
	rest := p
	if g.scheme {
		rest = p[strings.Index(p, "://")+3:]
	}
	if !strings.Contains(rest, "/") && !strings.HasSuffix(rest, "*") {
		p += "/" // an origin: its root
	}
	g.lead = strings.HasPrefix(p, "*")
	g.trail = strings.HasSuffix(p, "*")
	for _, s := range strings.Split(p, "*") {
		if s != "" {
			g.parts = append(g.parts, s)
		}
	}
	return g, nil
}

// matchTarget is the text patterns match: the URL with "/" for an empty
// path, and without its fragment.
func matchTarget(u *url.URL) string {
	c := *u
	c.Fragment, c.RawFragment = "", ""
	if c.Path == "" && c.Opaque == "" {
		c.Path = "/"
	}
	return c.String()
}

func (g urlGlob) match(target string) bool {
	if !g.scheme {
		if i := strings.Index(target, "://"); i >= 0 {
			target = target[i+3:]
		}
	}
	parts := g.parts
	if len(parts) == 0 {
		return g.lead // "*" matches everything
	}
	if !g.lead {
		if !strings.HasPrefix(target, parts[0]) {
			return false
		}
		target, parts = target[len(parts[0]):], parts[1:]
		if len(parts) == 0 {
			return g.trail || target == ""
		}
	}
	last := ""
	if !g.trail {
		last, parts = parts[len(parts)-1], parts[:len(parts)-1]
	}
	for _, p := range parts {
		i := strings.Index(target, p)
		if i < 0 {
			return false
		}
		target = target[i+len(p):]
	}
	if !g.trail {
		return strings.HasSuffix(target, last)
	}
	return true
}
