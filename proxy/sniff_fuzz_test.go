package proxy

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzSniff: classifying the first bytes of a captured connection never
// panics or consumes input, says HTTP only for a complete HTTP/1.x request
// line, and TLS only for a handshake record.
func FuzzSniff(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "POST /x HTTP/1.0\n\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"\x16\x03\x01\x00\x05hello", "SSH-2.0-OpenSSH\r\n", "GET /\r\n", "get / HTTP/1.1\r\n", "", "\x00\x01",
		"GET  / HTTP/1.1\r\n", "M-SEARCH * HTTP/1.1\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), maxRequestLine)
		kind := sniff(br)
		if rest, _ := br.Peek(br.Buffered()); !bytes.HasPrefix(data, rest) {
			t.Fatal("sniff consumed input")
		}
		switch kind {
		case payloadNone:
			if len(data) != 0 {
				t.Fatalf("none for %d bytes", len(data))
			}
		case payloadTLS:
			if data[0] != 0x16 {
				t.Fatalf("TLS for %q", data)
			}
		case payloadHTTP:
			line, _, _ := bytes.Cut(data, []byte("\n"))
			if !isRequestLine(append(line, '\n')) {
				t.Fatalf("HTTP for %q", data)
			}
			_, _ = peekRequestHost(br, 64<<10)
		}
	})
}
