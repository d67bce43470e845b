package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/decision"
)

// lateEOF hands the whole request body over at once, then delays the read
// that finds its end, as a busy scheduler can delay the upstream
// transport's final read for EOF after the last bytes are on the wire.
type lateEOF struct {
	r     io.ReadCloser
	size  int64
	delay time.Duration
	buf   []byte
	read  bool
}

func (l *lateEOF) Read(p []byte) (int, error) {
	if !l.read {
		l.read = true
		l.buf = make([]byte, l.size)
		if _, err := io.ReadFull(l.r, l.buf); err != nil {
			return 0, err
		}
	}
	if len(l.buf) > 0 {
		n := copy(p, l.buf)
		l.buf = l.buf[n:]
		return n, nil
	}
	time.Sleep(l.delay)
	return l.r.Read(p)
}

func (l *lateEOF) Close() error { return l.r.Close() }

// An upload the upstream has read in full must not cut off its response.
// The net/http server closes a fully read request body when the response
// header is written; if the transport's final read for EOF comes after
// that and fails, the transport drops the upstream connection with the
// response still streaming, and the sandbox gets a truncated answer. The
// soak test (cmd/outbound-soak) found this on about one POST in 10,000.
func TestUploadResponseSurvivesLateEOFRead(t *testing.T) {
	const chunks, chunk = 20, 4 << 10
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Upload", strconv.FormatInt(n, 10))
		for range chunks { // still streaming well after the late read
			w.Write(bytes.Repeat([]byte{'r'}, chunk))
			w.(http.Flusher).Flush()
			time.Sleep(30 * time.Millisecond)
		}
	}))
	t.Cleanup(up.Close)
	h := newHarness(t, harnessOpts{})
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		req.Body = &lateEOF{r: req.Body, size: req.ContentLength, delay: 200 * time.Millisecond}
		return forward(h.backend.rt, req, "internet")
	}
	upload := bytes.Repeat([]byte{'u'}, 64<<10)
	res, err := h.client("a", tokenA, "a").Post(up.URL+"/upload", "application/octet-stream", bytes.NewReader(upload))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || len(body) != chunks*chunk {
		t.Fatalf("response cut off: %d of %d bytes, %v\n%s", len(body), chunks*chunk, err, h.logs)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("X-Upload") != strconv.Itoa(len(upload)) {
		t.Fatalf("status %d, upstream read %s of %d bytes", res.StatusCode, res.Header.Get("X-Upload"), len(upload))
	}
}
