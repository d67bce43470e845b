package app_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// rawEcho answers an Upgrade with 101 and then echoes bytes; enough to see a
// relayed upgraded connection without a WebSocket library.
func rawEcho(t *testing.T, sawHeader chan<- string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "not an upgrade", 400)
			return
		}
		sawHeader <- r.Header.Get("X-Injected")
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestWebSocketThroughHandler: the handshake goes through a JS handler that
// adds a header (by_host), or is forwarded as is (internet), and the
// upgraded connection is relayed both ways.
func TestWebSocketThroughHandler(t *testing.T) {
	for _, tc := range []struct{ host, want string }{
		{"ws.example", "ws-secret-value"},
		{"plain.example", ""},
	} {
		t.Run(tc.host, func(t *testing.T) { testWebSocket(t, tc.host, tc.want) })
	}
}

func testWebSocket(t *testing.T, host, wantHeader string) {
	saw := make(chan string, 1)
	up := rawEcho(t, saw)
	port := up.Listener.Addr().(*net.TCPAddr).Port
	const secret = "ws-secret-value"
	srv := apptest.Start(t, app.Config{
		Script:    "../../testdata/server/ws.js",
		Vars:      map[string]string{"WS_SECRET": secret},
		ConnectTo: []string{fmt.Sprintf("%s:80:127.0.0.1:%d", host, port)},
	})
	id, token := credsOf(t, srv.Create(t, "sbx-ws", ""))

	conn, err := net.Dial("tcp", srv.ProxyAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET http://%s/chat HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n"+
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		host, host, basicAuth(id, token))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("handshake: %d %q\n%s", resp.StatusCode, b, srv.Log)
	}
	if got := <-saw; got != wantHeader {
		t.Fatalf("upstream saw x-injected=%q", got)
	}
	for _, msg := range []string{"hello", "again"} {
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo: %q %v", buf, err)
		}
	}
}
