// Package control is the control API: JSON over HTTP on the admin listener.
// It owns routing, authentication of the operator, request decoding limits
// and the error shape ({"error": ...}); what each call does is asked of a
// Backend, so the API knows nothing of how instances or scripts work.
package control

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/outbound-dev/outbound/internal/host"
	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/proxy/authlimit"
)

// Limits on what a caller may send.
const (
	maxJSONBody = 1 << 20  // runtime method arguments, instance creation
	maxKVValue  = 25 << 20 // a KV value, as Workers KV
)

// Created is the answer to an instance creation. It is the only place the
// instance token is ever shown, inside ProxyURL.
type Created struct {
	ID       string `json:"id"`
	Class    string `json:"class"`
	ProxyURL string `json:"proxy_url"`
	CAPEM    string `json:"ca_pem"`
}

// Backend is what the control API drives.
type Backend interface {
	Status() any
	// CreateInstance creates an instance; sources are the client ranges the
	// transparent listener attributes to it (none for most instances).
	CreateInstance(ctx context.Context, id, class string, sources []netip.Prefix) (Created, error)
	ListInstances() []any
	GetInstance(id string) (any, error)
	DeleteInstance(ctx context.Context, id string) error
	CAPEM(id string) ([]byte, error)
	HAR(id string) ([]byte, error)
	// Call runs a runtime method with its JSON arguments and returns the
	// instance view.
	Call(ctx context.Context, id, method string, args []json.RawMessage) (any, error)
	// Explain answers how a request to rawURL would be decided for the
	// instance ({step, handler, blocked, reason}), running no handler and
	// dialing nothing. The decision does not depend on the method.
	Explain(ctx context.Context, id, rawURL string) (any, error)
	KV(binding string) (store.KV, bool)
}

// ParseSources reads the "sources" of an instance: CIDR ranges, or bare
// addresses meaning just that address.
func ParseSources(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("bad source %q: want a CIDR such as 10.0.3.7/32", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Error is an error with the HTTP status it should be answered with. The
// message is sent to the caller, so it must never hold a secret.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Errorf builds an *Error.
func Errorf(status int, format string, args ...any) error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Options configure the API.
type Options struct {
	Backend Backend
	Token   string       // when set, every call needs "Authorization: Bearer <Token>"
	Metrics http.Handler // served at /metrics; nil for none
	// Events is served at GET /v1/events (the live event stream), behind
	// the token like every other call; nil for none.
	Events http.Handler
	// UI is served at GET /ui/ and GET / redirects there; nil for none. The
	// page's files carry no data and are served without the token, since a
	// browser cannot send a header when it opens a page: every call the page
	// makes sends the token.
	UI     http.Handler
	Logger *slog.Logger
	// AuthLimit, if set, counts wrong tokens per source; a source that used
	// up its failures gets 429 without its token being checked.
	AuthLimit *authlimit.Limiter
}

type api struct {
	b         Backend
	tokenHash [32]byte
	hasToken  bool
	limit     *authlimit.Limiter
	log       *slog.Logger
}

// Handler returns the control API as an http.Handler.
func Handler(o Options) http.Handler {
	a := &api{b: o.Backend, log: o.Logger, limit: o.AuthLimit}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if o.Token != "" {
		a.tokenHash = sha256.Sum256([]byte(o.Token))
		a.hasToken = true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", a.status)
	mux.HandleFunc("POST /v1/instances", a.create)
	mux.HandleFunc("GET /v1/instances", a.list)
	mux.HandleFunc("GET /v1/instances/{id}", a.get)
	mux.HandleFunc("DELETE /v1/instances/{id}", a.delete)
	mux.HandleFunc("GET /v1/instances/{id}/ca.pem", a.caPEM)
	mux.HandleFunc("GET /v1/instances/{id}/har", a.har)
	mux.HandleFunc("POST /v1/instances/{id}/explain", a.explain)
	mux.HandleFunc("POST /v1/instances/{id}/{method}", a.call)
	mux.HandleFunc("PUT /v1/kv/{binding}/{key}", a.kvPut)
	mux.HandleFunc("GET /v1/kv/{binding}/{key}", a.kvGet)
	mux.HandleFunc("DELETE /v1/kv/{binding}/{key}", a.kvDelete)
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	if o.Events != nil {
		mux.Handle("GET /v1/events", o.Events)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, Errorf(http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	if o.UI == nil {
		return a.authenticate(mux)
	}
	root := http.NewServeMux()
	root.Handle("GET /ui/", http.StripPrefix("/ui", o.UI))
	root.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	root.Handle("/", a.authenticate(mux))
	return root
}

// rebound reports a request that reached a loopback listener under a DNS
// name other than localhost: what a web page does when it rebinds its own
// name to 127.0.0.1 to reach local services from the browser. A browser
// sends the page's name as Host, so refusing such names keeps pages out of
// the control API even when it runs without --admin-token.
func rebound(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	ap, err := netip.ParseAddrPort(local.String())
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return false
	}
	h := r.Host
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	return !host.IsLocalhost(h)
}

func (a *api) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rebound(r) {
			writeError(w, Errorf(http.StatusMisdirectedRequest,
				"the control API on a loopback address answers only to an IP address or localhost, not to %q (a guard against DNS rebinding)", r.Host))
			return
		}
		if a.hasToken {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if ok {
				if wait, limited := a.limit.Limited(r.RemoteAddr); limited {
					w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
					writeError(w, Errorf(http.StatusTooManyRequests, "too many wrong admin tokens from this address; retry later"))
					return
				}
			}
			h := sha256.Sum256([]byte(got))
			if !ok || subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) != 1 {
				if ok { // a missing token is a misconfigured client, not a guess
					a.limit.Failed(r.RemoteAddr)
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="outbound"`)
				writeError(w, Errorf(http.StatusUnauthorized, "missing or wrong admin token"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.b.Status())
}

func (a *api) create(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ID      string   `json:"id"`
		Class   string   `json:"class"`
		Sources []string `json:"sources"`
	}
	if err := decodeJSON(w, r, &body, true); err != nil {
		a.fail(w, r, err)
		return
	}
	sources, err := ParseSources(body.Sources)
	if err != nil {
		a.fail(w, r, &Error{Status: http.StatusBadRequest, Msg: err.Error()})
		return
	}
	c, err := a.b.CreateInstance(r.Context(), body.ID, body.Class, sources)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	views := a.b.ListInstances()
	if views == nil {
		views = []any{}
	}
	writeJSON(w, http.StatusOK, views)
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	v, err := a.b.GetInstance(r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	if err := a.b.DeleteInstance(r.Context(), r.PathValue("id")); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) caPEM(w http.ResponseWriter, r *http.Request) {
	pem, err := a.b.CAPEM(r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(pem)
}

func (a *api) har(w http.ResponseWriter, r *http.Request) {
	b, err := a.b.HAR(r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (a *api) call(w http.ResponseWriter, r *http.Request) {
	var args []json.RawMessage
	if err := decodeJSON(w, r, &args, true); err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := a.b.Call(r.Context(), r.PathValue("id"), r.PathValue("method"), args)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *api) explain(w http.ResponseWriter, r *http.Request) {
	var body struct {
		URL    *string `json:"url"`
		Method *string `json:"method"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.URL == nil || *body.URL == "" {
		a.fail(w, r, Errorf(http.StatusBadRequest, `"url" is required: the absolute http:// or https:// URL to explain`))
		return
	}
	// The method is accepted, as the spec's body has it, but decides
	// nothing; a method is a token, as a field name is.
	if body.Method != nil && !httpguts.ValidHeaderFieldName(*body.Method) {
		a.fail(w, r, Errorf(http.StatusBadRequest, "%q is not an HTTP method", *body.Method))
		return
	}
	v, err := a.b.Explain(r.Context(), r.PathValue("id"), *body.URL)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *api) kv(w http.ResponseWriter, r *http.Request) (store.KV, string, bool) {
	binding := r.PathValue("binding")
	kv, ok := a.b.KV(binding)
	if !ok {
		writeError(w, Errorf(http.StatusNotFound, "no KV binding %q", binding))
		return nil, "", false
	}
	key := r.PathValue("key")
	if key == "" {
		writeError(w, Errorf(http.StatusBadRequest, "empty KV key"))
		return nil, "", false
	}
	return kv, key, true
}

func (a *api) kvPut(w http.ResponseWriter, r *http.Request) {
	kv, key, ok := a.kv(w, r)
	if !ok {
		return
	}
	val, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxKVValue))
	if err != nil {
		writeError(w, bodyError(err))
		return
	}
	if err := kv.Put(r.Context(), key, val, time.Time{}); err != nil {
		a.kvFailed(w, r, "put", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) kvGet(w http.ResponseWriter, r *http.Request) {
	kv, key, ok := a.kv(w, r)
	if !ok {
		return
	}
	val, found, err := kv.Get(r.Context(), key)
	if err != nil {
		a.kvFailed(w, r, "get", err)
		return
	}
	if !found {
		writeError(w, Errorf(http.StatusNotFound, "no such key"))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(val)
}

func (a *api) kvDelete(w http.ResponseWriter, r *http.Request) {
	kv, key, ok := a.kv(w, r)
	if !ok {
		return
	}
	if err := kv.Delete(r.Context(), key); err != nil {
		a.kvFailed(w, r, "delete", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// kvFailed answers a KV call the store failed: 503 with the cause when
// the store is out of reach (the caller may retry), else 500 and the log.
func (a *api) kvFailed(w http.ResponseWriter, r *http.Request, op string, err error) {
	if errors.Is(err, store.ErrUnavailable) {
		writeError(w, &Error{Status: http.StatusServiceUnavailable, Msg: err.Error()})
		return
	}
	a.log.Error("kv "+op+" failed", "binding", r.PathValue("binding"), "error", err)
	writeError(w, Errorf(http.StatusInternalServerError, "kv %s failed", op))
}

// decodeJSON reads one JSON value, size-limited. An empty body is allowed
// only when emptyOK, and leaves v untouched.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		return bodyError(err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if emptyOK {
			return nil
		}
		return Errorf(http.StatusBadRequest, "empty body: a JSON value is required")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		return Errorf(http.StatusBadRequest, "malformed JSON body: %v", jsonErrorText(err))
	}
	if dec.More() {
		return Errorf(http.StatusBadRequest, "malformed JSON body: trailing data after the value")
	}
	return nil
}

// jsonErrorText describes a decoding error without echoing the input.
func jsonErrorText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("expected %s, got JSON %s", te.Type, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at offset %d", se.Offset)
	}
	return "invalid JSON"
}

func bodyError(err error) error {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return Errorf(http.StatusRequestEntityTooLarge, "body larger than %d bytes", mb.Limit)
	}
	return Errorf(http.StatusBadRequest, "reading body: %v", err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, Errorf(http.StatusInternalServerError, "encoding answer failed"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// fail answers with err, logging errors the caller is not shown.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		a.log.Error("control API call failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	writeError(w, err)
}

// writeError answers with {"error": ...}. Errors that are not *Error are
// internal: their text may carry detail the caller must not see.
func writeError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Msg: "internal error"}
	}
	b, _ := json.Marshal(map[string]string{"error": e.Msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	w.Write(append(b, '\n'))
}
