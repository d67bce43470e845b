package proxy

// Relays: connections outbound hands bytes across once HTTP is done with
// them — CONNECT tunnels (raw or intercepted) and upgraded WebSockets —
// tracked so that Shutdown and CloseInstance can end them.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outbound-dev/outbound/proxy/har"
)

type relayKey struct{}

// relay is an open CONNECT tunnel (mode raw or intercept) or a relayed
// WebSocket (mode ""). Shutdown and CloseInstance close conn.
type relay struct {
	s        *Server
	inst     Instance
	host     string
	port     int
	mode     string
	plain    bool     // a captured plain-HTTP connection: its requests are http://
	conn     net.Conn // the sandbox side, as hijacked
	a        *audit   // logged when the tunnel ends
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
	ended    sync.Once
}

// track registers t so Shutdown and CloseInstance can close it.
func (s *Server) track(t *relay) {
	t.s = s
	s.mu.Lock()
	s.relays[t] = struct{}{}
	s.mu.Unlock()
	if s.baseCtx.Err() != nil { // shutting down: do not outlive it
		t.conn.Close()
	}
}

// finish releases the relay once: its slot, its gauge and its log line.
func (t *relay) finish() {
	t.ended.Do(func() {
		t.conn.Close()
		t.s.mu.Lock()
		delete(t.s.relays, t)
		t.s.mu.Unlock()
		if t.a != nil {
			if n := t.bytesIn.Load(); n > 0 {
				t.a.bytesIn = n
			}
			if n := t.bytesOut.Load(); n > 0 {
				t.a.bytesOut = n
			}
			t.s.logAudit(context.Background(), t.a)
		}
		if t.mode != "" {
			t.s.opts.Metrics.tunnel(t.mode, -1)
			t.s.releaseSlot()
		}
	})
}

func (s *Server) acquireSlot() bool {
	if s.tunnelSlots.Add(1) > int64(s.opts.MaxTunnels) {
		s.tunnelSlots.Add(-1)
		return false
	}
	return true
}

func (s *Server) releaseSlot() { s.tunnelSlots.Add(-1) }

// relayUpgrade answers a WebSocket handshake the Backend accepted (101 with
// the upgraded connection as its body) and relays both ways.
func (s *Server) relayUpgrade(w http.ResponseWriter, r *http.Request, res *http.Response, a *audit, rec *har.Record, wait time.Duration, parent *relay) error {
	back, ok := res.Body.(io.ReadWriteCloser)
	upgrade, _ := stripHop(res.Header)
	fail := func(err error) error {
		res.Body.Close()
		a.status = http.StatusBadGateway
		a.err = errors.Join(a.err, err)
		plain(w, a.status, "bad gateway")
		rec.Finish(&http.Response{StatusCode: a.status, Header: http.Header{}}, 0, wait)
		return nil
	}
	if !ok {
		return fail(fmt.Errorf("101 response body %T is not a connection", res.Body))
	}
	if upgrade != "websocket" {
		return fail(fmt.Errorf("101 response switches to %q, not websocket", upgrade))
	}
	res.Header.Set("Connection", "Upgrade")
	res.Header.Set("Upgrade", "websocket")

	s.hijackWG.Add(1)
	defer s.hijackWG.Done()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil { // HTTP/2 has no upgrade
		return fail(fmt.Errorf("hijack for websocket: %w", err))
	}
	defer back.Close()
	defer conn.Close()
	if parent != nil {
		defer parent.finish() // the intercepted tunnel ends with this WebSocket
	} else {
		t := &relay{inst: a.instance, conn: conn}
		s.track(t)
		defer t.finish()
	}
	_ = conn.SetDeadline(time.Time{})
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	res.Header.Write(brw)
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		a.err = errors.Join(a.err, fmt.Errorf("write websocket handshake: %w", err))
		return nil
	}
	asSent := *res
	asSent.Proto = r.Proto
	rec.Finish(&asSent, 0, wait)
	a.bytesIn, a.bytesOut = pipe(conn, brw.Reader, back)
	return nil
}

// pipe copies bytes both ways between the sandbox (client, read through
// clientR) and upstream until both directions end, and returns the bytes
// sent each way. When one direction ends, the other side's write half is
// closed where the connection supports it (TCP, TLS), else both are closed.
func pipe(client net.Conn, clientR io.Reader, up io.ReadWriteCloser) (bytesIn, bytesOut int64) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		bytesIn, _ = io.Copy(up, clientR)
		if !closeWrite(up) {
			up.Close()
			client.Close()
		}
	}()
	bytesOut, _ = io.Copy(client, up)
	if !closeWrite(client) {
		up.Close()
		client.Close()
	}
	<-done
	return bytesIn, bytesOut
}

func closeWrite(c any) bool {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite() == nil
	}
	return false
}
