package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outbound-dev/outbound/proxy/ca"
)

// The names the clients ask for. ".test" never resolves: outbound reaches
// the upstream through --connect-to, which maps each name and port to a
// loopback listener and opts that address in past the private-network guard.
const (
	apiHost = "api.soak.test" // HTTP and HTTPS echo
	wsHost  = "ws.soak.test"  // WebSocket echo, plain and intercepted
)

// Headers the policy script sets on the way up; the upstream checks or
// echoes each so the client can see the handler ran, with which script
// version, for which instance.
const (
	hdrToken    = "X-Soak-Token"    // the env secret; the upstream refuses a request without it
	hdrVersion  = "X-Soak-Version"  // the script's VERSION, echoed back
	hdrInstance = "X-Soak-Instance" // ctx.containerId, echoed back
	hdrWS       = "X-Soak-Ws"       // set only by the WebSocket handler
	hdrSawToken = "X-Soak-Saw-Token"
)

// Upstream is the HTTP and HTTPS echo server on loopback.
type Upstream struct {
	HTTPAddr, HTTPSAddr string
	CAPEM               []byte // the throwaway CA that signed its certificates
	token               string

	servers  []*http.Server
	mu       sync.Mutex
	hijacked map[net.Conn]struct{}
	wg       sync.WaitGroup

	Requests, WSSessions atomic.Int64
	logs                 lineCounter
}

// StartUpstream listens on two loopback ports and serves until Close.
func StartUpstream(token string) (*Upstream, error) {
	authority, err := ca.New("outbound-soak-upstream", ca.Options{})
	if err != nil {
		return nil, fmt.Errorf("upstream CA: %w", err)
	}
	u := &Upstream{CAPEM: authority.CertPEM(), token: token, hijacked: map[net.Conn]struct{}{}}
	for _, useTLS := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			u.Close()
			return nil, fmt.Errorf("upstream listen: %w", err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(u.serve), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: log.New(&u.logs, "", 0)}
		if useTLS {
			srv.TLSConfig = &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
				name := h.ServerName
				if name == "" {
					name = apiHost
				}
				return authority.Leaf(name)
			}}
			u.HTTPSAddr = ln.Addr().String()
		} else {
			u.HTTPAddr = ln.Addr().String()
		}
		u.servers = append(u.servers, srv)
		u.wg.Go(func() {
			var err error
			if useTLS {
				err = srv.ServeTLS(ln, "", "")
			} else {
				err = srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				u.logs.Write([]byte("serve: " + err.Error()))
			}
		})
	}
	return u, nil
}

// ConnectTo is the --connect-to flags that send both names to this server.
func (u *Upstream) ConnectTo() []string {
	_, hp, _ := net.SplitHostPort(u.HTTPAddr)
	_, sp, _ := net.SplitHostPort(u.HTTPSAddr)
	var out []string
	for _, h := range []string{apiHost, wsHost} {
		out = append(out, h+":80:127.0.0.1:"+hp, h+":443:127.0.0.1:"+sp)
	}
	return out
}

// Close stops both servers and every WebSocket still open.
func (u *Upstream) Close() {
	for _, s := range u.servers {
		s.Close()
	}
	u.mu.Lock()
	for c := range u.hijacked {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// serve checks what the policy handler must have added, then echoes.
func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.Requests.Add(1)
	if r.Header.Get(hdrToken) != u.token {
		http.Error(w, "upstream: no injected token", http.StatusForbidden)
		return
	}
	inst := r.Header.Get(hdrInstance)
	if inst == "" || r.Header.Get("Proxy-Authorization") != "" {
		http.Error(w, "upstream: no instance header, or a proxy credential leaked upstream", http.StatusBadRequest)
		return
	}
	w.Header().Set(hdrVersion, r.Header.Get(hdrVersion))
	w.Header().Set(hdrInstance, inst)
	switch r.URL.Path {
	case "/echo":
		u.echo(w, r, inst)
	case "/ws":
		u.websocket(w, r)
	default:
		http.NotFound(w, r)
	}
}

// echoBody is what /echo answers: a line naming the request and instance,
// then the uploaded body (POST) or size bytes of a fixed pattern (GET).
func echoBody(id, inst string, upload []byte, size int) []byte {
	b := []byte("id=" + id + " inst=" + inst + "\n")
	if upload != nil {
		return append(b, upload...)
	}
	for i := range size {
		b = append(b, 'a'+byte(i%26))
	}
	return b
}

func (u *Upstream) echo(w http.ResponseWriter, r *http.Request, inst string) {
	id := r.URL.Query().Get("id")
	var body []byte
	switch r.Method {
	case http.MethodGet:
		size, err := strconv.Atoi(r.URL.Query().Get("size"))
		if err != nil || size < 0 || size > 1<<20 {
			http.Error(w, "upstream: want ?size=N up to 1 MiB", http.StatusBadRequest)
			return
		}
		body = echoBody(id, inst, nil, size)
	case http.MethodPost:
		up, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "upstream: reading upload: "+err.Error(), http.StatusBadRequest)
			return
		}
		if want := r.Header.Get("X-Soak-Upload-Length"); want != strconv.Itoa(len(up)) {
			http.Error(w, fmt.Sprintf("upstream: upload of %d bytes, client sent %s", len(up), want), http.StatusBadRequest)
			return
		}
		body = echoBody(id, inst, up, 0)
	default:
		http.Error(w, "upstream: GET or POST", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// websocket accepts the upgrade only if the WebSocket handler's header
// arrived, says so in the 101, and echoes text frames with "echo:" before
// them until the client closes.
func (u *Upstream) websocket(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" || r.ProtoMajor != 1 {
		http.Error(w, "upstream: not a WebSocket handshake", http.StatusBadRequest)
		return
	}
	if r.Header.Get(hdrWS) != "1" {
		http.Error(w, "upstream: the handshake lacks the WebSocket handler's header", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	u.mu.Lock()
	u.hijacked[conn] = struct{}{}
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		delete(u.hijacked, conn)
		u.mu.Unlock()
		conn.Close()
	}()
	u.WSSessions.Add(1)
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: %s\r\n%s: 1\r\n%s: %s\r\n%s: %s\r\n\r\n",
		wsAccept(key), hdrSawToken, hdrVersion, r.Header.Get(hdrVersion), hdrInstance, r.Header.Get(hdrInstance))
	if err := brw.Flush(); err != nil {
		return
	}
	wsEchoLoop(brw.Reader, conn)
}

func wsEchoLoop(r *bufio.Reader, w io.Writer) {
	for {
		op, p, masked, err := readFrame(r)
		if err != nil || !masked {
			return // a client frame must be masked; anything else ends the session
		}
		switch op {
		case opClose:
			writeFrame(w, opClose, p, false)
			return
		case opText:
			if writeFrame(w, opText, append([]byte("echo:"), p...), false) != nil {
				return
			}
		default:
			return
		}
	}
}

// lineCounter is a log destination that counts lines and keeps the first few.
type lineCounter struct {
	mu    sync.Mutex
	n     int
	first []string
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if len(l.first) < 5 {
		l.first = append(l.first, strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (l *lineCounter) snapshot() (int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, append([]string(nil), l.first...)
}

// waitCtx sleeps for d or until ctx ends, and says whether it slept in full.
func waitCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
