package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/outbound-dev/outbound/internal/decision"
)

// A minimal WebSocket peer: enough of RFC 6455 (handshake, short unfragmented
// frames, client masking) to prove the proxy relays an upgraded connection.

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

func writeFrame(w io.Writer, payload []byte, mask bool) error {
	if len(payload) > 125 {
		return errors.New("test frames are short")
	}
	hdr := []byte{0x81, byte(len(payload))} // FIN, text
	body := append([]byte(nil), payload...)
	if mask {
		var key [4]byte
		rand.Read(key[:])
		hdr[1] |= 0x80
		hdr = append(hdr, key[:]...)
		for i := range body {
			body[i] ^= key[i%4]
		}
	}
	_, err := w.Write(append(hdr, body...))
	return err
}

func readFrame(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(hdr[1] & 0x7f)
	var key [4]byte
	masked := hdr[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return nil, err
		}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, err
	}
	if masked {
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return p, nil
}

// wsEcho accepts a WebSocket only if the handler's header arrived, then
// echoes frames back with "echo:" prepended.
func wsEcho(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Injected") != "by-handler" || r.Header.Get("Proxy-Authorization") != "" ||
			!strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "bad handshake", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\nX-Saw-Injected: yes\r\n\r\n")
		brw.Flush()
		for {
			p, err := readFrame(brw)
			if err != nil {
				return
			}
			if err := writeFrame(conn, append([]byte("echo:"), p...), false); err != nil {
				return
			}
		}
	})
}

func wsDial(t *testing.T, c *http.Client, url string) io.ReadWriteCloser {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", key)
	noTimeout := *c // a client Timeout wraps the body, hiding the connection
	noTimeout.Timeout = 0
	res, err := noTimeout.Do(req)
	if err != nil {
		t.Fatalf("handshake %s: %v", url, err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("handshake %s: %d %s", url, res.StatusCode, b)
	}
	if res.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) || res.Header.Get("X-Saw-Injected") != "yes" {
		t.Fatalf("handshake headers %v", res.Header)
	}
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T", res.Body)
	}
	return rwc
}

func wsRoundTrip(t *testing.T, ws io.ReadWriteCloser) {
	t.Helper()
	br := bufio.NewReader(ws)
	for _, msg := range []string{"hello", "second message"} {
		if err := writeFrame(ws, []byte(msg), true); err != nil {
			t.Fatal(err)
		}
		got, err := readFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "echo:"+msg {
			t.Fatalf("echo %q", got)
		}
	}
}

func TestWebSocketThroughProxy(t *testing.T) {
	upTLS, ho := httpsUpstream(t, wsEcho(t))
	_ = upTLS
	h := newHarness(t, ho)
	h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
		req.Header.Set("X-Injected", "by-handler") // the handler modifies the handshake
		return forward(h.backend.rt, req, "by_host")
	}

	t.Run("ws", func(t *testing.T) {
		up := httptest.NewServer(wsEcho(t))
		t.Cleanup(up.Close)
		ws := wsDial(t, h.client("a", tokenA, "a"), up.URL+"/chat")
		wsRoundTrip(t, ws)
		ws.Close()
	})
	t.Run("wss intercepted", func(t *testing.T) {
		c := h.client("a", tokenA, "a")
		c.Transport.(*http.Transport).ForceAttemptHTTP2 = false
		c.Transport.(*http.Transport).TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		ws := wsDial(t, c, "https://example.com/chat")
		if h.backend.last().url != "https://example.com/chat" {
			t.Errorf("backend saw %q", h.backend.last().url)
		}
		wsRoundTrip(t, ws)
		ws.Close()
		waitFor(t, func() bool { return h.srv.ActiveTunnels() == 0 })
	})
	t.Run("refused handshake passes through", func(t *testing.T) {
		h.backend.handle = func(ctx context.Context, inst Instance, req *http.Request) (*http.Response, decision.Outcome) {
			return forward(h.backend.rt, req, "by_host") // no injected header: upstream answers 400
		}
		up := httptest.NewServer(wsEcho(t))
		t.Cleanup(up.Close)
		req, _ := http.NewRequest("GET", up.URL, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		res, err := h.client("a", tokenA, "a").Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 400 {
			t.Fatalf("status %d", res.StatusCode)
		}
	})
}
