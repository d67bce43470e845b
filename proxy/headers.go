package proxy

import (
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// hopHeaders are never forwarded, in either direction (RFC 9110 7.6.1, plus
// the proxy-only headers). Proxy-Authorization carries the instance token.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection", // non-standard, sent by old clients
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer", // the announcement; trailers themselves are relayed
	"Transfer-Encoding",
	"Upgrade",
}

// stripHop removes hop-by-hop headers from h, including those named by
// Connection. It returns the upgrade protocol ("websocket") when h asked
// for one, and whether TE listed trailers, so the caller can keep those.
func stripHop(h http.Header) (upgrade string, teTrailers bool) {
	if httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		upgrade = strings.ToLower(textproto.TrimString(h.Get("Upgrade")))
	}
	teTrailers = httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k) // already canonical
	}
	return upgrade, teTrailers
}

// stripRequest strips a request's hop-by-hop headers, keeping a WebSocket
// upgrade (the only upgrade relayed) and "TE: trailers".
func stripRequest(h http.Header) (websocket bool) {
	upgrade, te := stripHop(h)
	if te {
		h.Set("Te", "trailers")
	}
	if upgrade == "websocket" {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", "websocket")
		return true
	}
	return false
}
