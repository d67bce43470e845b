package jail

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/outbound-dev/outbound/proxy/fakedns"
)

// dnsIdle is how long a DNS flow (one UDP source port, or one TCP
// connection) is kept without a query.
const dnsIdle = 30 * time.Second

// Stack is the userspace TCP/IP stack on the jail's TUN device.
type Stack struct {
	opts StackOptions
	tun  *os.File
	ep   *channel.Endpoint
	s    *stack.Stack

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the packet pumps and every connection's goroutine

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // open connections, closed by Close
}

// NewStack builds the stack on tun (the TUN device's file, IFF_NO_PI).
// Packets flow once Start is called.
func NewStack(tun *os.File, opts StackOptions) (*Stack, error) {
	if opts.Serve == nil {
		return nil, errors.New("jail: StackOptions.Serve is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Pool == nil {
		p, err := fakedns.NewPool(Pool, PoolFirst)
		if err != nil {
			return nil, err
		}
		opts.Pool = p
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	ep := channel.New(1024, MTU, "")
	if err := s.CreateNIC(1, ep); err != nil {
		s.Close()
		return nil, fmt.Errorf("jail: netstack NIC: %s", err)
	}
	// Accept packets to any address, and answer from it: the jail may dial
	// any address, and outbound is every one of them.
	s.SetPromiscuousMode(1, true)
	s.SetSpoofing(1, true)
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	st := &Stack{opts: opts, tun: tun, ep: ep, s: s, conns: map[net.Conn]struct{}{}}
	st.ctx, st.cancel = context.WithCancel(context.Background())
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(s, 0, 1024, st.handleTCP).HandlePacket)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(s, st.handleUDP).HandlePacket)
	return st, nil
}

// Start moves packets between the TUN device and the stack until Close.
func (st *Stack) Start() {
	st.wg.Add(2)
	go func() { defer st.wg.Done(); st.fromTUN() }()
	go func() { defer st.wg.Done(); st.toTUN() }()
}

// Close stops the stack: the TUN device, the pumps and every open
// connection. It waits for their goroutines.
func (st *Stack) Close() {
	st.mu.Lock()
	st.closed = true
	for c := range st.conns {
		c.Close()
	}
	st.mu.Unlock()
	st.cancel()
	st.tun.Close() // ends fromTUN's read
	st.ep.Close()
	st.wg.Wait()
	st.s.Close()
	st.s.Wait()
}

// fromTUN injects the packets the jail sends that outbound serves: TCP, and
// UDP to port 53. Everything else is dropped here, before the stack can
// answer it (no ICMP echo, no port-unreachable).
func (st *Stack) fromTUN() {
	buf := make([]byte, MTU+64)
	for {
		n, err := st.tun.Read(buf)
		if err != nil {
			if st.ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
				st.opts.Logger.Warn("jail: reading the TUN device failed; the jail is cut off", "error", err)
			}
			return
		}
		proto, ok := admit(buf[:n])
		if !ok {
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(buf[:n])})
		st.ep.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
}

// toTUN writes the stack's packets to the jail.
func (st *Stack) toTUN() {
	for {
		pkt := st.ep.ReadContext(st.ctx)
		if pkt == nil {
			return
		}
		v := pkt.ToView()
		_, err := st.tun.Write(v.AsSlice())
		v.Release()
		pkt.DecRef()
		if err != nil && st.ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
			st.opts.Logger.Debug("jail: writing to the TUN device failed", "error", err)
		}
	}
}

// admit says whether a packet from the jail goes to the stack, and as what
// network protocol: TCP, or unfragmented UDP to port 53.
func admit(p []byte) (tcpip.NetworkProtocolNumber, bool) {
	if len(p) < 1 {
		return 0, false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < header.IPv4MinimumSize {
			return 0, false
		}
		ihl := int(p[0]&0x0f) * 4
		if ihl < header.IPv4MinimumSize || len(p) < ihl {
			return 0, false
		}
		switch p[9] {
		case uint8(header.TCPProtocolNumber):
			return header.IPv4ProtocolNumber, true
		case uint8(header.UDPProtocolNumber):
			frag := binary.BigEndian.Uint16(p[6:8])
			if frag&0x3fff != 0 || len(p) < ihl+header.UDPMinimumSize { // MF set or an offset: a fragment
				return 0, false
			}
			return header.IPv4ProtocolNumber, binary.BigEndian.Uint16(p[ihl+2:]) == 53
		}
	case 6:
		if len(p) < header.IPv6MinimumSize {
			return 0, false
		}
		switch p[6] { // no extension headers: a jail client has no reason to send any
		case uint8(header.TCPProtocolNumber):
			return header.IPv6ProtocolNumber, true
		case uint8(header.UDPProtocolNumber):
			if len(p) < header.IPv6MinimumSize+header.UDPMinimumSize {
				return 0, false
			}
			return header.IPv6ProtocolNumber, binary.BigEndian.Uint16(p[header.IPv6MinimumSize+2:]) == 53
		}
	}
	return 0, false
}

// track registers c so Close can end it and wait for its goroutine; the
// returned func closes and forgets it. After Close it closes c and says no.
func (st *Stack) track(c net.Conn) (untrack func(), ok bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		c.Close()
		return nil, false
	}
	st.conns[c] = struct{}{}
	st.wg.Add(1)
	return func() {
		st.mu.Lock()
		delete(st.conns, c)
		st.mu.Unlock()
		c.Close()
		st.wg.Done()
	}, true
}

// handleTCP takes one connection the jail opens. It runs on a goroutine of
// its own (the forwarder starts one per SYN).
func (st *Stack) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	dst := addrOf(id.LocalAddress)
	port := int(id.LocalPort)
	var target string
	switch {
	case port == 53:
	case dst == Gateway:
		if port != ProxyPort || !st.opts.Proxy.IsValid() {
			r.Complete(true)
			return
		}
	case st.opts.Pool.Contains(dst):
		name, ok := st.opts.Pool.Name(dst)
		if !ok { // never handed out, or reused since: refuse rather than guess
			st.opts.Logger.Debug("jail: connection to a private address no name maps to; refused", "addr", dst, "port", port)
			r.Complete(true)
			return
		}
		target = name
	default:
		target = dst.String()
	}
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		r.Complete(true)
		return
	}
	r.Complete(false)
	conn := gonet.NewTCPConn(&wq, ep)
	untrack, ok := st.track(conn)
	if !ok {
		return
	}
	defer untrack()
	switch {
	case port == 53:
		st.dnsTCP(conn)
	case dst == Gateway:
		st.relayProxy(conn)
	default:
		st.opts.Serve(st.ctx, conn, target, port)
	}
}

func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}

// relayProxy joins a connection to Gateway:ProxyPort with the real proxy
// listener.
func (st *Stack) relayProxy(conn *gonet.TCPConn) {
	d := net.Dialer{Timeout: 10 * time.Second}
	up, err := d.DialContext(st.ctx, "tcp", st.opts.Proxy.String())
	if err != nil {
		st.opts.Logger.Warn("jail: the proxy listener cannot be reached", "proxy", st.opts.Proxy, "error", err)
		return
	}
	untrack, ok := st.track(up)
	if !ok {
		return
	}
	defer untrack()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(up, conn)
		up.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(conn, up)
	conn.CloseWrite()
	<-done
}

// dnsTCP answers DNS over TCP: length-prefixed messages, until the client
// closes or idles.
func (st *Stack) dnsTCP(conn *gonet.TCPConn) {
	var lenBuf [2]byte
	msg := make([]byte, 65535)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(dnsIdle))
		if _, err := io.ReadFull(conn, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(conn, msg[:n]); err != nil {
			return
		}
		res, err := st.opts.Pool.Answer(msg[:n])
		if err != nil {
			return
		}
		out := make([]byte, 2+len(res))
		binary.BigEndian.PutUint16(out, uint16(len(res)))
		copy(out[2:], res)
		if _, err := conn.Write(out); err != nil {
			return
		}
	}
}

// handleUDP answers DNS on port 53 of any address; admit let nothing else
// through. It is called on the stack's packet path, so the flow is served
// on a goroutine of its own.
func (st *Stack) handleUDP(r *udp.ForwarderRequest) bool {
	if r.ID().LocalPort != 53 {
		return true // dropped, without a port-unreachable
	}
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		return true
	}
	conn := gonet.NewUDPConn(&wq, ep)
	untrack, ok := st.track(conn)
	if !ok {
		return true
	}
	go func() {
		defer untrack()
		buf := make([]byte, 65535)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(dnsIdle))
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if res, err := st.opts.Pool.Answer(buf[:n]); err == nil {
				conn.Write(res)
			}
		}
	}()
	return true
}
