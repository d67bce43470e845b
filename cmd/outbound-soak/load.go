package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The kinds of traffic, in report order. ws and wss count handshakes (a
// new connection each: an upgraded connection is not reused), ws-echo
// counts the round trips inside them.
var kinds = []string{"http", "https", "h2", "ws", "wss", "ws-echo"}

// mix assigns a kind to each client: 40 % plain HTTP, 30 % HTTPS over
// HTTP/1.1, 10 % HTTPS over HTTP/2, 10 % ws, 10 % wss, all through MITM
// where TLS is involved.
var mix = [10]string{"http", "http", "http", "https", "https", "h2", "ws", "wss", "http", "https"}

// clientKind spreads the kinds over the instances: with 100 instances and
// 1,000 clients, every instance gets one client of each slot in mix.
func clientKind(i, instances int) string { return mix[(i+i/instances)%len(mix)] }

// Stats are one phase's counts, shared by all clients.
type Stats struct {
	Lat   map[string]*Histogram
	Dials map[string]*atomic.Int64 // connections opened to the proxy, by client kind
	Errs  ErrorCounts
	Cut   atomic.Int64 // requests cut off by the end of the phase: not failures
	Start time.Time
	Stop  time.Time // when the load was told to stop: its deadline
	End   time.Time // when every client had stopped
}

func newStats() *Stats {
	s := &Stats{Lat: map[string]*Histogram{}, Dials: map[string]*atomic.Int64{}}
	for _, k := range kinds {
		s.Lat[k] = new(Histogram)
		s.Dials[k] = new(atomic.Int64)
	}
	return s
}

// Requests is the number of successful requests of every kind.
func (s *Stats) Requests() uint64 {
	var n uint64
	for _, h := range s.Lat {
		n += h.Count()
	}
	return n
}

// Load drives the clients.
type Load struct {
	Instances []Instance
	Versions  *VersionTracker
	Timeout   time.Duration // per request, handshake or echo round trip
	Think     time.Duration // mean pause between a client's requests
	pools     []*x509.CertPool
}

func (l *Load) init() error {
	if l.pools != nil {
		return nil
	}
	for _, in := range l.Instances {
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(in.CAPEM) {
			return fmt.Errorf("instance %s: CA PEM does not parse", in.ID)
		}
		l.pools = append(l.pools, p)
	}
	return nil
}

// Run starts n clients and returns when ctx has ended and every client has
// closed its connections.
func (l *Load) Run(ctx context.Context, n int, st *Stats) error {
	if err := l.init(); err != nil {
		return err
	}
	st.Start = time.Now()
	st.Stop, _ = ctx.Deadline()
	var wg sync.WaitGroup
	for i := range n {
		c := &soakClient{id: i, load: l, st: st, inst: i % len(l.Instances),
			kind: clientKind(i, len(l.Instances)), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))}
		wg.Go(func() { c.run(ctx) })
	}
	wg.Wait()
	st.End = time.Now()
	return nil
}

type soakClient struct {
	id, inst int
	kind     string
	load     *Load
	st       *Stats
	rng      *rand.Rand
	seq      int
}

func (c *soakClient) transport() *http.Transport {
	in := c.load.Instances[c.inst]
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	dials := c.st.Dials[c.kind]
	tr := &http.Transport{
		Proxy:               http.ProxyURL(in.ProxyURL),
		TLSClientConfig:     &tls.Config{RootCAs: c.load.pools[c.inst]},
		MaxIdleConnsPerHost: 1,
		// A dial still running when a load stops finishes in the background
		// and parks its connection in the pool after the client has closed
		// its idle ones; this closes it before goroutines are counted.
		IdleConnTimeout:    5 * time.Second,
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	var p http.Protocols
	if c.kind == "h2" {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true) // ws over HTTP/2 needs RFC 8441, which the soak does not exercise
	}
	tr.Protocols = &p
	return tr
}

func (c *soakClient) run(ctx context.Context) {
	tr := c.transport()
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for ctx.Err() == nil {
		var err error
		switch c.kind {
		case "ws", "wss":
			err = c.wsSession(ctx, hc)
		default:
			err = c.request(ctx, hc)
		}
		if err != nil {
			// Give a failing path a moment rather than spinning on it.
			waitCtx(ctx, 100*time.Millisecond)
		}
		c.think(ctx)
	}
}

func (c *soakClient) think(ctx context.Context) {
	if c.load.Think > 0 {
		waitCtx(ctx, time.Duration(c.rng.Int64N(int64(2*c.load.Think))))
	}
}

func (c *soakClient) nextID() string {
	c.seq++
	return "c" + strconv.Itoa(c.id) + "-" + strconv.Itoa(c.seq)
}

// bodySize picks a response or upload size: mostly small, like API calls,
// with some larger bodies so that streaming is exercised.
func (c *soakClient) bodySize() int {
	switch r := c.rng.IntN(100); {
	case r < 60:
		return c.rng.IntN(256)
	case r < 90:
		return 1024 + c.rng.IntN(4096)
	default:
		return 16<<10 + c.rng.IntN(48<<10)
	}
}

// fail counts err unless the phase is over, in which case the request was
// merely cut off. It returns err for the caller's back-off.
func (c *soakClient) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		c.st.Cut.Add(1)
		return nil
	}
	c.st.Errs.Add(c.kind, err)
	return err
}

// request sends one GET or POST to the echo upstream and checks every part
// of the answer.
func (c *soakClient) request(ctx context.Context, hc *http.Client) error {
	scheme := "https"
	if c.kind == "http" {
		scheme = "http"
	}
	id := c.nextID()
	size := c.bodySize()
	u := scheme + "://" + apiHost + "/echo?id=" + id + "&size=" + strconv.Itoa(size)
	var upload []byte
	method := http.MethodGet
	if c.rng.IntN(4) == 0 {
		method = http.MethodPost
		upload = make([]byte, size)
		for i := range upload {
			upload[i] = byte(c.rng.IntN(256))
		}
	}
	rctx, cancel := context.WithTimeout(ctx, c.load.Timeout)
	defer cancel()
	var body io.Reader
	if upload != nil {
		body = bytes.NewReader(upload)
	}
	req, err := http.NewRequestWithContext(rctx, method, u, body)
	if err != nil {
		return c.fail(ctx, err)
	}
	if upload != nil {
		req.Header.Set("X-Soak-Upload-Length", strconv.Itoa(len(upload)))
	}
	sent := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return c.fail(ctx, timeoutErr(rctx, c.load.Timeout, err))
	}
	got, err := io.ReadAll(io.LimitReader(resp.Body, 2<<20))
	resp.Body.Close()
	done := time.Now()
	if err != nil {
		return c.fail(ctx, timeoutErr(rctx, c.load.Timeout, fmt.Errorf("reading response body: %w", err)))
	}
	if err := c.checkResponse(resp, got, id, upload, size, sent, done); err != nil {
		return c.fail(ctx, err)
	}
	c.st.Lat[c.kind].Record(done.Sub(sent))
	return nil
}

func (c *soakClient) checkResponse(resp *http.Response, got []byte, id string, upload []byte, size int, sent, done time.Time) error {
	if resp.StatusCode != http.StatusOK {
		return checkErr("status "+strconv.Itoa(resp.StatusCode), "%s", truncate(string(got), 200))
	}
	if c.kind == "h2" && resp.ProtoMajor != 2 {
		return checkErr("not HTTP/2", "answered over %s", resp.Proto)
	}
	inst := c.load.Instances[c.inst].ID
	if h := resp.Header.Get(hdrInstance); h != inst {
		return checkErr("wrong instance", "upstream saw instance %q, client is %q", h, inst)
	}
	if err := c.load.Versions.Check(resp.Header.Get(hdrVersion), sent, done); err != nil {
		return err
	}
	if want := echoBody(id, inst, upload, size); !bytes.Equal(got, want) {
		return checkErr("wrong body", "got %d bytes starting %q, want %d starting %q",
			len(got), truncate(string(got), 60), len(want), truncate(string(want), 60))
	}
	return nil
}

// timeoutErr marks an error caused by the per-request deadline.
func timeoutErr(rctx context.Context, d time.Duration, err error) error {
	if errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w after %s: %v", errTimeout, d, err)
	}
	return err
}

// wsSession opens a WebSocket through the proxy, checks that the upstream
// saw the handler's header, does a few echo round trips and closes it.
func (c *soakClient) wsSession(ctx context.Context, hc *http.Client) error {
	scheme := "http"
	if c.kind == "wss" {
		scheme = "https"
	}
	id := c.nextID()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// One watchdog for the whole session, re-armed for each step: the
	// upgraded connection has no deadline of its own.
	var timedOut atomic.Bool
	watchdog := time.AfterFunc(c.load.Timeout, func() { timedOut.Store(true); cancel() })
	defer watchdog.Stop()
	stepErr := func(err error) error {
		if timedOut.Load() {
			err = fmt.Errorf("%w after %s: %v", errTimeout, c.load.Timeout, err)
		}
		return c.fail(ctx, err)
	}

	req, err := http.NewRequestWithContext(sctx, http.MethodGet, scheme+"://"+wsHost+"/ws?id="+id, nil)
	if err != nil {
		return c.fail(ctx, err)
	}
	key := wsKey()
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", key)
	sent := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return stepErr(err)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		resp.Body.Close()
		return c.fail(ctx, checkErr("handshake status "+strconv.Itoa(resp.StatusCode), "%s", b))
	}
	defer rwc.Close()
	stop := context.AfterFunc(sctx, func() { rwc.Close() })
	defer stop()
	done := time.Now()
	inst := c.load.Instances[c.inst].ID
	switch {
	case resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key):
		return c.fail(ctx, checkErr("bad handshake", "Sec-WebSocket-Accept %q", resp.Header.Get("Sec-WebSocket-Accept")))
	case resp.Header.Get(hdrSawToken) != "1":
		return c.fail(ctx, checkErr("bad handshake", "upstream did not confirm the handler's headers"))
	case resp.Header.Get(hdrInstance) != inst:
		return c.fail(ctx, checkErr("wrong instance", "upstream saw instance %q, client is %q", resp.Header.Get(hdrInstance), inst))
	}
	if err := c.load.Versions.Check(resp.Header.Get(hdrVersion), sent, done); err != nil {
		return c.fail(ctx, err)
	}
	c.st.Lat[c.kind].Record(done.Sub(sent))

	br := bufio.NewReader(rwc)
	for j := range 5 + c.rng.IntN(46) {
		c.think(sctx)
		if sctx.Err() != nil {
			return stepErr(sctx.Err())
		}
		watchdog.Reset(c.load.Timeout)
		msg := make([]byte, 0, 64)
		msg = append(msg, id+"-"+strconv.Itoa(j)+" "...)
		for range c.rng.IntN(2000) {
			msg = append(msg, 'A'+byte(c.rng.IntN(26)))
		}
		t0 := time.Now()
		if err := writeFrame(rwc, opText, msg, true); err != nil {
			return stepErr(fmt.Errorf("websocket write: %w", err))
		}
		op, p, masked, err := readFrame(br)
		if err != nil {
			return stepErr(fmt.Errorf("websocket read: %w", err))
		}
		if op != opText || masked || !bytes.Equal(p, append([]byte("echo:"), msg...)) {
			return c.fail(ctx, checkErr("wrong echo", "opcode %d, masked %v, %d bytes starting %q", op, masked, len(p), truncate(string(p), 40)))
		}
		c.st.Lat["ws-echo"].Record(time.Since(t0))
	}
	watchdog.Reset(c.load.Timeout)
	if err := writeFrame(rwc, opClose, []byte{0x03, 0xe8}, true); err != nil {
		return stepErr(fmt.Errorf("websocket close: %w", err))
	}
	if op, _, _, err := readFrame(br); err != nil || op != opClose {
		if err == nil {
			err = checkErr("wrong echo", "opcode %d where the close reply was due", op)
		}
		return stepErr(fmt.Errorf("websocket close reply: %w", err))
	}
	return nil
}
