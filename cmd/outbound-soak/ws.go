package main

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
)

// Just enough of RFC 6455 for an echo round trip: unfragmented frames with
// 7- or 16-bit lengths, masking from the client, text and close opcodes.

const (
	wsGUID    = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	opText    = 0x1
	opClose   = 0x8
	maxWSSize = 1<<16 - 1
)

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

func wsKey() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// writeFrame writes one final frame; a client must mask, a server must not.
func writeFrame(w io.Writer, op byte, payload []byte, mask bool) error {
	if len(payload) > maxWSSize {
		return fmt.Errorf("websocket frame of %d bytes: the soak only sends up to %d", len(payload), maxWSSize)
	}
	hdr := make([]byte, 0, 8+len(payload))
	hdr = append(hdr, 0x80|op)
	var m byte
	if mask {
		m = 0x80
	}
	if len(payload) < 126 {
		hdr = append(hdr, m|byte(len(payload)))
	} else {
		hdr = append(hdr, m|126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(payload)))
	}
	if !mask {
		_, err := w.Write(append(hdr, payload...))
		return err
	}
	var key [4]byte
	rand.Read(key[:])
	hdr = append(hdr, key[:]...)
	n := len(hdr)
	hdr = append(hdr, payload...)
	for i := range payload {
		hdr[n+i] ^= key[i%4]
	}
	_, err := w.Write(hdr)
	return err
}

// readFrame reads one frame and unmasks it; masked says whether it was.
func readFrame(r io.Reader) (op byte, payload []byte, masked bool, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, false, err
	}
	if hdr[0]&0x80 == 0 {
		return 0, nil, false, fmt.Errorf("websocket: fragmented frame (header %#x)", hdr[0])
	}
	op = hdr[0] & 0x0f
	masked = hdr[1]&0x80 != 0
	n := int(hdr[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return 0, nil, false, err
		}
		n = int(binary.BigEndian.Uint16(ext[:]))
	case 127:
		return 0, nil, false, fmt.Errorf("websocket: 64-bit frame length")
	}
	var key [4]byte
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, false, err
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, false, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return op, payload, masked, nil
}
