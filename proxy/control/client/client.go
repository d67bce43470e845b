// Package client is a small Go client of the control API, used by the CLI
// and by tests. It returns the API's JSON as raw messages where the shape
// belongs to the server.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/outbound-dev/outbound/proxy/control"
)

// APIError is a non-2xx answer of the control API.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return fmt.Sprintf("control API: %d: %s", e.Status, e.Msg) }

// Client talks to one control API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client of the API at base (e.g. http://127.0.0.1:3129).
// A base without a scheme gets http://.
func New(base, token string) *Client {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{}}
}

// send makes one call with the bearer token and header added; the caller
// closes the answer's body.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("control API request %s %s: %w", method, path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control API %s: %w", c.base, err)
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, want int) ([]byte, error) {
	var header http.Header
	if body != nil {
		header = http.Header{"Content-Type": {"application/json"}}
	}
	resp, err := c.send(ctx, method, path, body, header)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("control API %s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return nil, apiError(resp.StatusCode, b)
	}
	return b, nil
}

// apiError reads the API's {"error": ...} answer.
func apiError(status int, body []byte) *APIError {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = http.StatusText(status)
	}
	return &APIError{Status: status, Msg: e.Error}
}

func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

func inst(id string) string { return "/v1/instances/" + url.PathEscape(id) }

// Status returns GET /v1/status.
func (c *Client) Status(ctx context.Context) (json.RawMessage, error) {
	return c.do(ctx, http.MethodGet, "/v1/status", nil, http.StatusOK)
}

// Create creates an instance; id and class may be empty.
func (c *Client) Create(ctx context.Context, id, class string, sources ...string) (control.Created, error) {
	var out control.Created
	body, err := jsonBody(struct {
		ID      string   `json:"id,omitempty"`
		Class   string   `json:"class,omitempty"`
		Sources []string `json:"sources,omitempty"`
	}{id, class, sources})
	if err != nil {
		return out, err
	}
	b, err := c.do(ctx, http.MethodPost, "/v1/instances", body, http.StatusCreated)
	if err != nil {
		return out, err
	}
	err = json.Unmarshal(b, &out)
	return out, err
}

// Get returns one instance view.
func (c *Client) Get(ctx context.Context, id string) (json.RawMessage, error) {
	return c.do(ctx, http.MethodGet, inst(id), nil, http.StatusOK)
}

// List returns every instance view.
func (c *Client) List(ctx context.Context) (json.RawMessage, error) {
	return c.do(ctx, http.MethodGet, "/v1/instances", nil, http.StatusOK)
}

// Delete deletes an instance.
func (c *Client) Delete(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, inst(id), nil, http.StatusNoContent)
	return err
}

// CAPEM returns the instance CA certificate in PEM.
func (c *Client) CAPEM(ctx context.Context, id string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, inst(id)+"/ca.pem", nil, http.StatusOK)
}

// HAR returns the instance's recent traffic as HAR 1.2.
func (c *Client) HAR(ctx context.Context, id string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, inst(id)+"/har", nil, http.StatusOK)
}

// Call runs a runtime method and returns the instance view.
func (c *Client) Call(ctx context.Context, id, method string, args []json.RawMessage) (json.RawMessage, error) {
	if args == nil {
		args = []json.RawMessage{}
	}
	body, err := jsonBody(args)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodPost, inst(id)+"/"+url.PathEscape(method), body, http.StatusOK)
}

// Explain asks how a request to rawURL would be decided for the instance.
// The answer is {step, handler, blocked, reason}.
func (c *Client) Explain(ctx context.Context, id, rawURL string) (json.RawMessage, error) {
	body, err := jsonBody(struct {
		URL string `json:"url"`
	}{rawURL})
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodPost, inst(id)+"/explain", body, http.StatusOK)
}

func kvPath(binding, key string) string {
	return "/v1/kv/" + url.PathEscape(binding) + "/" + url.PathEscape(key)
}

// KVPut stores a value.
func (c *Client) KVPut(ctx context.Context, binding, key string, value []byte) error {
	_, err := c.do(ctx, http.MethodPut, kvPath(binding, key), bytes.NewReader(value), http.StatusNoContent)
	return err
}

// KVGet reads a value; a missing key is an *APIError with Status 404.
func (c *Client) KVGet(ctx context.Context, binding, key string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, kvPath(binding, key), nil, http.StatusOK)
}

// KVDelete deletes a key.
func (c *Client) KVDelete(ctx context.Context, binding, key string) error {
	_, err := c.do(ctx, http.MethodDelete, kvPath(binding, key), nil, http.StatusNoContent)
	return err
}

// Event is one event of the live stream: its kind (decision, console,
// reload, dropped) and its JSON.
type Event struct {
	Kind string
	Data json.RawMessage
}

// maxEventLine bounds one line of the event stream.
const maxEventLine = 1 << 20

// Events follows GET /v1/events, limited to one instance unless instance is
// "", and calls fn with each event. It returns when ctx is done (ctx.Err()),
// when fn fails (its error), or when the stream breaks or ends.
func (c *Client) Events(ctx context.Context, instance string, fn func(Event) error) error {
	path := "/v1/events"
	if instance != "" {
		path += "?instance=" + url.QueryEscape(instance)
	}
	resp, err := c.send(ctx, http.MethodGet, path, nil, http.Header{"Accept": {"text/event-stream"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return apiError(resp.StatusCode, b)
	}
	err = readEvents(resp.Body, fn)
	if ctx.Err() != nil {
		return ctx.Err() // the caller stopped following: not a failure of the stream
	}
	return err
}

// readEvents reads a Server-Sent Events stream, calling fn with each event.
// It returns fn's error as it is, or what ended the stream.
func readEvents(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	var ev Event
	var data []byte
	hasData := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if hasData {
				ev.Data = data
				if ev.Kind == "" {
					ev.Kind = "message"
				}
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev, data, hasData = Event{}, nil, false
		case strings.HasPrefix(line, ":"): // a comment: keep-alive
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.Kind = value
			case "data":
				if hasData {
					data = append(data, '\n')
				}
				data, hasData = append(data, value...), true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("control API event stream: %w", err)
	}
	return errors.New("control API event stream: the server ended it")
}
