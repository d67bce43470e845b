//go:build linux

package jail

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// ipv4 builds an IPv4 header with protocol proto, then payload.
func pkt4(proto uint8, frag uint16, payload []byte) []byte {
	p := make([]byte, 20, 20+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[6:], frag)
	p[9] = proto
	return append(p, payload...)
}

func udpTo(port uint16) []byte {
	u := make([]byte, 8)
	binary.BigEndian.PutUint16(u[2:], port)
	return u
}

func pkt6(next uint8, payload []byte) []byte {
	p := make([]byte, 40, 40+len(payload))
	p[0] = 0x60
	p[6] = next
	return append(p, payload...)
}

func TestAdmit(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"tcp4", pkt4(6, 0, make([]byte, 20)), true},
		{"dns over udp4", pkt4(17, 0, udpTo(53)), true},
		{"other udp4", pkt4(17, 0, udpTo(9999)), false},
		{"udp4 fragment", pkt4(17, 0x2000, udpTo(53)), false},
		{"icmp4", pkt4(1, 0, make([]byte, 8)), false},
		{"tcp6", pkt6(6, make([]byte, 20)), true},
		{"dns over udp6", pkt6(17, udpTo(53)), true},
		{"other udp6", pkt6(17, udpTo(123)), false},
		{"icmp6", pkt6(58, make([]byte, 8)), false},
		{"truncated", []byte{0x45, 0}, false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		if _, got := admit(tt.pkt); got != tt.want {
			t.Errorf("%s: admit = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// FuzzAdmit: any bytes from the jail are judged without panicking, and
// only TCP or UDP to port 53 gets through.
func FuzzAdmit(f *testing.F) {
	f.Add(pkt4(6, 0, make([]byte, 20)))
	f.Add(pkt4(17, 0, udpTo(53)))
	f.Add(pkt6(17, udpTo(53)))
	f.Add([]byte{0x4f})
	f.Fuzz(func(t *testing.T, p []byte) {
		proto, ok := admit(p)
		if !ok {
			return
		}
		switch proto {
		case header.IPv4ProtocolNumber:
			ihl := int(p[0]&0xf) * 4
			if p[9] == 17 && binary.BigEndian.Uint16(p[ihl+2:]) != 53 {
				t.Fatal("admitted UDP to another port")
			}
		case header.IPv6ProtocolNumber:
			if p[6] == 17 && binary.BigEndian.Uint16(p[42:]) != 53 {
				t.Fatal("admitted UDP to another port")
			}
		default:
			t.Fatalf("admitted protocol %d", proto)
		}
	})
}
