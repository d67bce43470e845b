package proxy

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// credentials parses "Proxy-Authorization: Basic base64(id:token)".
func credentials(r *http.Request) (id, token string, ok bool) {
	v := r.Header.Get("Proxy-Authorization")
	scheme, enc, found := strings.Cut(v, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return "", "", false
	}
	id, token, ok = strings.Cut(string(raw), ":")
	if !ok || id == "" {
		return "", "", false
	}
	return id, token, true
}

// authenticate returns the instance the request speaks for, or answers it
// (407, or 429 for a source that used up its failed attempts) and returns
// nil. A limited source's credentials are not checked at all, so a guess
// made while limited tells the guesser nothing. Only sent-but-wrong
// credentials count as failures: a client that waits for the 407 challenge
// before sending any costs nothing.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, a *audit) Instance {
	id, token, ok := credentials(r)
	present := r.Header.Get("Proxy-Authorization") != ""
	if present {
		if wait, limited := s.authLimit.Limited(r.RemoteAddr); limited {
			a.step, a.status = stepAuthLimit, http.StatusTooManyRequests
			w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
			plain(w, a.status, "too many failed proxy authentications from this address; retry later")
			return nil
		}
	}
	var inst Instance
	var home string
	if ok {
		if m, isFleet := s.opts.Backend.(Misdirector); isFleet {
			inst, home, ok = m.AuthenticateHome(id, token)
		} else {
			inst, ok = s.opts.Backend.Authenticate(id, token)
		}
	}
	if (!ok || inst == nil) && home != "" {
		a.step, a.status = stepOtherHome, http.StatusMisdirectedRequest
		w.Header().Set("X-Outbound-Home", home)
		plain(w, a.status, fmt.Sprintf("instance %s is served by the outbound replica at %s: use the proxy_url it was created with", id, home))
		return nil
	}
	if !ok || inst == nil {
		if present {
			s.authLimit.Failed(r.RemoteAddr)
		}
		a.step, a.status = stepAuth, http.StatusProxyAuthRequired
		w.Header().Set("Proxy-Authenticate", `Basic realm="outbound"`)
		plain(w, a.status, "proxy authentication required")
		return nil
	}
	return inst
}
