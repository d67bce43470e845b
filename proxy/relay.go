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

	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/outbound-dev/outbound/proxy/har"
)

type relayKey struct{}

// errRevoked is the audit error of a tunnel Redecide closed.
var errRevoked = errors.New("closed: the instance's policy changed and no longer lets this tunnel through")

// relay is an open CONNECT tunnel (mode raw or intercept) or a relayed
// WebSocket (mode ""). Shutdown, CloseInstance and Redecide cut it.
type relay struct {
	s       *Server
	inst    Instance
	host    string
	port    int
	mode    string    // modeCapturedHTTP: its requests are http://
	conn    net.Conn  // the sandbox side, as hijacked
	up      io.Closer // the upstream side of a raw tunnel or WebSocket; nil when intercepted; s.mu
	a       *audit    // logged when the tunnel ends
	revoked bool      // cut by Redecide; s.mu
	cutDone bool      // cut once; s.mu
	// decide decides an opaque tunnel (raw, or TLS not intercepted) again,
	// as it was decided when it opened; nil for the others (see Redecide).
	decide func(context.Context) decision.Connect
	// epoch is the policy epoch of the last decision (see opened); only
	// the goroutine serving t uses it.
	epoch    uint64
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
	ended    sync.Once
}

// track registers t so Shutdown, CloseInstance and Redecide can cut it.
// A tunnel opened for an instance deleted meanwhile, or during a forced
// shutdown, is cut at once: the check comes after the registration, so
// CloseInstance and Shutdown (which cancel or delete first, then lock)
// either see t or are seen here.
func (s *Server) track(t *relay) {
	t.s = s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.relays[t] = struct{}{}
	if s.baseCtx.Err() != nil || !t.inst.Alive() {
		t.cut()
	}
}

// setUp names the upstream side of a relay that is already tracked, and
// closes it at once if the relay was cut meanwhile.
func (t *relay) setUp(c io.Closer) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.up = c
	if t.cutDone {
		c.Close()
	}
}

// cut closes both sides, so neither copy direction waits on a peer. Once
// the relay is tracked, s.mu must be held (setUp may change t.up).
func (t *relay) cut() {
	t.cutDone = true
	t.conn.Close()
	if t.up != nil {
		t.up.Close()
	}
}

// finish releases the relay once: its slot, its gauge and its log line.
func (t *relay) finish() {
	t.ended.Do(func() {
		t.conn.Close()
		t.s.mu.Lock()
		delete(t.s.relays, t)
		revoked := t.revoked
		t.s.mu.Unlock()
		if t.a != nil {
			if revoked { // what failed after the cut is its consequence
				t.a.err = errRevoked
			}
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

	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil { // HTTP/2 has no upgrade
		return fail(fmt.Errorf("hijack for websocket: %w", err))
	}
	defer back.Close()
	defer conn.Close()
	if parent != nil {
		parent.setUp(back)    // cutting the tunnel cuts the WebSocket's upstream too
		defer parent.finish() // the intercepted tunnel ends with this WebSocket
	} else {
		t := &relay{inst: a.instance, conn: conn, up: back}
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
