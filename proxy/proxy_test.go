package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestPlainHTTP(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	up := echoUpstream(t)
	_, port, _ := net.SplitHostPort(up.Listener.Addr().String())
	c := h.client("a", tokenA, "a")

	tests := []struct {
		url     string
		wantURL string
	}{
		{up.URL + "/p/a%2Fb?q=1&r=2", "http://127.0.0.1:" + port + "/p/a%2Fb?q=1&r=2"},
		{"http://LOCALHOST.:" + port + "/x", "http://localhost:" + port + "/x"},
		{"http://127.1:" + port + "/legacy", "http://127.0.0.1:" + port + "/legacy"},
	}
	for _, tc := range tests {
		res, err := c.Post(tc.url, "text/plain", strings.NewReader("body!"))
		if err != nil {
			t.Fatalf("POST %s: %v", tc.url, err)
		}
		body := mustBody(t, res)
		if res.StatusCode != 200 || !strings.HasSuffix(body, " body!") {
			t.Fatalf("POST %s: %d %q", tc.url, res.StatusCode, body)
		}
		seen := h.backend.last()
		if seen.url != tc.wantURL || seen.inst != "a" {
			t.Errorf("backend saw %q for instance %q, want %q", seen.url, seen.inst, tc.wantURL)
		}
		if seen.header.Get("Proxy-Authorization") != "" {
			t.Error("backend saw Proxy-Authorization")
		}
		if strings.Contains(res.Header.Get("X-Seen-Headers"), "Proxy-Authorization") {
			t.Error("upstream saw Proxy-Authorization")
		}
	}
	// Without an explicit port the URL stays portless.
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		return textResponse(200, req.URL.String()+" "+req.Host), decision.Outcome{Step: "by_host", Handler: "fake"}
	}
	res, err := c.Get("http://Example.COM/a")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustBody(t, res); got != "http://example.com/a example.com" {
		t.Errorf("portless URL handed on as %q", got)
	}
	// Counted when the handler returns, which may be just after the client
	// has the body.
	waitFor(t, func() bool { return value(h.srv.opts.Metrics.requests.WithLabelValues("by_host", "200")) == 1 })
	if value(h.srv.opts.Metrics.handlerSeconds.WithLabelValues("fake").(prometheus.Metric)) != 1 {
		t.Error("no handler duration observed")
	}
}

func TestChunkedUploadStreams(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	up := echoUpstream(t)
	pr, pw := io.Pipe()
	go func() {
		for i := range 3 {
			fmt.Fprintf(pw, "part%d;", i)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", up.URL+"/up", pr) // unknown length: chunked
	res, err := h.client("a", tokenA, "a").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := mustBody(t, res); body != "PUT /up part0;part1;part2;" {
		t.Fatalf("upstream got %q", body)
	}
	waitFor(t, func() bool { return strings.Contains(h.logs.String(), `"bytes_in":18`) })
}

func TestProxyAuth(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	up := echoUpstream(t)
	tests := []struct {
		name string
		auth string // "" = no header
	}{
		{"missing", ""},
		{"wrong token", basic("a", "nope")},
		{"unknown id", basic("zzz", tokenA)},
		{"forged id with another's token", basic("a", tokenB)},
		{"empty id", basic("", tokenA)},
		{"bearer scheme", "Bearer " + tokenA},
		{"bad base64", "Basic !!!"},
		{"no colon", "Basic " + "YQ=="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.backend.count()
			// Plain HTTP request.
			c, br := h.raw()
			fmt.Fprintf(c, "GET %s/ HTTP/1.1\r\nHost: %s\r\n", up.URL, up.Listener.Addr())
			if tc.auth != "" {
				fmt.Fprintf(c, "Proxy-Authorization: %s\r\n", tc.auth)
			}
			fmt.Fprint(c, "\r\n")
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 407 || res.Header.Get("Proxy-Authenticate") != `Basic realm="outbound"` {
				t.Errorf("GET: %d %q", res.StatusCode, res.Header.Get("Proxy-Authenticate"))
			}
			// CONNECT.
			_, _, cres := h.connect("example.com:443", tc.auth)
			if cres.StatusCode != 407 || cres.Header.Get("Proxy-Authenticate") != `Basic realm="outbound"` {
				t.Errorf("CONNECT: %d %q", cres.StatusCode, cres.Header.Get("Proxy-Authenticate"))
			}
			if h.backend.count() != before {
				t.Error("an unauthenticated request reached the backend")
			}
		})
	}
	// The Go client's view (curl-style -x http://id:token@...).
	res, err := h.client("a", tokenB, "a").Get(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 407 {
		t.Errorf("client with a forged id: %d", res.StatusCode)
	}
	if _, err := h.client("b", "wrong", "b").Get("https://example.com/"); err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
		t.Errorf("HTTPS with a wrong token: %v", err)
	}
	if strings.Contains(h.logs.String(), tokenA) || strings.Contains(h.logs.String(), tokenB) {
		t.Fatal("a token reached the log")
	}
}

func TestBadRequests(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	tests := []struct {
		name, req string
		want      int
	}{
		{"origin-form", "GET /path HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: " + basic("a", tokenA) + "\r\n\r\n", 400},
		{"https absolute-form", "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: " + basic("a", tokenA) + "\r\n\r\n", 400},
		{"bad host", "GET http://exa_mple..com/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: " + basic("a", tokenA) + "\r\n\r\n", 400},
		{"CONNECT without port", "CONNECT example.com HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: " + basic("a", tokenA) + "\r\n\r\n", 400},
		{"self-loop", "GET http://" + h.addr + "/v1/status HTTP/1.1\r\nHost: x\r\nProxy-Authorization: " + basic("a", tokenA) + "\r\n\r\n", 400},
		{"self-loop via localhost", "GET http://localhost:" + portOf(h.addr) + "/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: " + basic("a", tokenA) + "\r\n\r\n", 400},
		{"self-loop CONNECT", "CONNECT " + h.addr + " HTTP/1.1\r\nHost: x\r\nProxy-Authorization: " + basic("a", tokenA) + "\r\n\r\n", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.backend.count()
			c, br := h.raw()
			io.WriteString(c, tc.req)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tc.want {
				t.Errorf("status %d, want %d", res.StatusCode, tc.want)
			}
			if h.backend.count() != before {
				t.Error("a bad request reached the backend")
			}
		})
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// Invariant 3 end to end: the upstream dial guard sees the resolved address
// whatever spelling the sandbox used, and nothing reaches the upstream.
func TestPrivateNetGuard(t *testing.T) {
	h := newHarness(t, harnessOpts{strictGuard: true})
	hits := 0
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	t.Cleanup(up.Close)
	port := portOf(up.Listener.Addr().String())
	c := h.client("a", tokenA, "a")
	for _, host := range []string{"localhost", "127.0.0.1", "127.1", "0x7f000001", "2130706433", "0177.0.0.1", "[::ffff:127.0.0.1]"} {
		res, err := c.Get("http://" + host + ":" + port + "/")
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: status %d, want 502", host, res.StatusCode)
		}
		// Raw tunnel to the same address.
		_, _, cres := h.connect(host+":"+port, basic("a", tokenA))
		if cres.StatusCode != http.StatusBadGateway {
			t.Errorf("CONNECT %s: status %d, want 502", host, cres.StatusCode)
		}
	}
	if hits != 0 {
		t.Fatalf("the loopback upstream was reached %d times", hits)
	}
	if got := value(h.srv.opts.Metrics.upstreamErrors.WithLabelValues("deny")); got != 14 {
		t.Errorf("upstream deny errors = %v, want 14", got)
	}
	if !strings.Contains(h.logs.String(), "refused: loopback") {
		t.Error("the deny reason is not in the log")
	}
}

func TestHopByHopStripped(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for k := range r.Header {
			names = append(names, k)
		}
		w.Header().Set("X-Seen", strings.Join(names, ","))
		w.Header().Set("X-Seen-Te", r.Header.Get("Te"))
		w.Header().Set("Connection", "X-Drop-Me")
		w.Header().Set("X-Drop-Me", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", `Basic realm="upstream"`)
		w.Header().Set("Upgrade", "h2c")
		w.Header().Set("X-Keep", "yes")
		io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)

	c, br := h.raw()
	fmt.Fprintf(c, "GET %s/ HTTP/1.1\r\nHost: %s\r\n"+
		"Proxy-Authorization: %s\r\n"+
		"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\n"+
		"Te: trailers, deflate\r\nUpgrade: h2c\r\nTrailer: X-T\r\nX-End: kept\r\n\r\n",
		up.URL, up.Listener.Addr(), basic("a", tokenA))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := mustBody(t, res)
	if res.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	seen := strings.Split(res.Header.Get("X-Seen"), ",")
	for _, bad := range []string{"X-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Upgrade", "Trailer"} {
		for _, s := range seen {
			if s == bad {
				t.Errorf("upstream saw %s", bad)
			}
		}
	}
	if !strings.Contains(res.Header.Get("X-Seen"), "X-End") {
		t.Errorf("end-to-end header lost: %v", seen)
	}
	if got := res.Header.Get("X-Seen-Te"); got != "trailers" {
		t.Errorf("upstream Te = %q, want trailers", got)
	}
	for _, bad := range []string{"X-Drop-Me", "Keep-Alive", "Proxy-Authenticate", "Upgrade"} {
		if res.Header.Get(bad) != "" {
			t.Errorf("sandbox got %s", bad)
		}
	}
	if res.Header.Get("X-Keep") != "yes" {
		t.Error("end-to-end response header lost")
	}
	// The connection is still usable (keep-alive) after stripping.
	fmt.Fprintf(c, "GET %s/again HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n", up.URL, basic("a", tokenA))
	res, err = http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("second request on the connection: %v", err)
	}
	res.Body.Close()
}

func TestUpstreamBodyFailureTruncates(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		pr, pw := io.Pipe()
		go func() {
			io.WriteString(pw, "partial")
			pw.CloseWithError(fmt.Errorf("upstream reset"))
		}()
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: pr, ContentLength: 100}, decision.Outcome{Step: "internet"}
	}
	res, err := h.client("a", tokenA, "a").Get("http://example.com/")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil {
		t.Fatal("a truncated upstream body looked complete to the sandbox")
	}
}

func TestBackendErrorsGoToLogOnly(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		return textResponse(500, "Internal Server Error"), decision.Outcome{Step: "outbound", Handler: "outbound", Err: fmt.Errorf("TypeError: boom at script.js:3:7")}
	}
	res, err := h.client("a", tokenA, "a").Get("http://example.com/secret?token=abc")
	if err != nil {
		t.Fatal(err)
	}
	if body := mustBody(t, res); res.StatusCode != 500 || strings.Contains(body, "boom") {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	waitFor(t, func() bool { return strings.Contains(h.logs.String(), `"msg":"request"`) })
	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		if strings.Contains(l, `"msg":"request"`) {
			json.Unmarshal([]byte(l), &line)
		}
	}
	want := map[string]any{"level": "WARN", "instance": "a", "class": "Test", "method": "GET", "scheme": "http",
		"host": "example.com", "path": "/secret", "step": "outbound", "handler": "outbound", "status": float64(500),
		"error": "TypeError: boom at script.js:3:7"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v", k, line[k], v)
		}
	}
	for _, k := range []string{"request_id", "bytes_in", "bytes_out", "duration"} {
		if _, ok := line[k]; !ok {
			t.Errorf("log lacks %s", k)
		}
	}
	if strings.Contains(h.logs.String(), "token=abc") {
		t.Error("the query string reached the log")
	}
}

// value reads a counter, a gauge, or a histogram's sample count.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	case d.Histogram != nil:
		return float64(d.Histogram.GetSampleCount())
	}
	return 0
}

// A body that fills the small copy buffer moves to the large one; bytes
// stay intact and in order, and what arrives after the switch is still
// flushed at once.
func TestBulkBodyStreamsAfterBufferSwitch(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	bulk := make([]byte, 3*smallCopyBuf+7)
	for i := range bulk {
		bulk[i] = byte(i * 7)
	}
	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		pr, pw := io.Pipe()
		go func() {
			pw.Write(bulk)
			pw.Write([]byte("tail-1"))
			select {
			case <-release:
			case <-ctx.Done():
			}
			pw.Write([]byte("tail-2"))
			pw.Close()
		}()
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: pr, ContentLength: -1}, decision.Outcome{Step: "internet"}
	}
	res, err := h.client("a", tokenA, "a").Get("http://example.com/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	first := make([]byte, len(bulk)+len("tail-1"))
	got := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(res.Body, first)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("bytes written before the upstream paused did not arrive: the proxy buffers after the switch")
	}
	if !bytes.Equal(first[:len(bulk)], bulk) || string(first[len(bulk):]) != "tail-1" {
		t.Fatal("bulk body corrupted across the buffer switch")
	}
	close(release)
	rest, err := io.ReadAll(res.Body)
	if err != nil || string(rest) != "tail-2" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}
