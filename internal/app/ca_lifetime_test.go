package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

func caOf(t *testing.T, pemText string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		t.Fatal("CA PEM does not decode")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Every answer that carries the instance view shows when its CA expires,
// the creation log line says it, and the metrics carry the earliest expiry.
func TestCAExpiryIsVisible(t *testing.T) {
	srv := apptest.Start(t, app.Config{Script: securityDir + "policy.js", CAValidity: 72 * time.Hour})
	ctx := context.Background()
	first := caOf(t, srv.Create(t, "first", "Open").CAPEM)
	second := caOf(t, srv.Create(t, "second", "Deny").CAPEM)
	if life := first.NotAfter.Sub(first.NotBefore); life != 73*time.Hour {
		t.Errorf("CA lifetime %s, want CAValidity 72h plus the hour of backdating", life)
	}

	type view struct {
		ID         string     `json:"id"`
		CANotAfter *time.Time `json:"caNotAfter"`
	}
	check := func(what string, raw []byte, v view, want *x509.Certificate) {
		t.Helper()
		if v.CANotAfter == nil || !v.CANotAfter.Equal(want.NotAfter) {
			t.Errorf("%s: caNotAfter %v, want %v: %s", what, v.CANotAfter, want.NotAfter, raw)
		}
	}
	raw, err := srv.Admin.Get(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	var v view
	json.Unmarshal(raw, &v)
	check("GET", raw, v, first)

	raw, err = srv.Admin.Call(ctx, "second", "denyHost", []json.RawMessage{json.RawMessage(`"x.test"`)})
	if err != nil {
		t.Fatal(err)
	}
	v = view{}
	json.Unmarshal(raw, &v)
	check("runtime method", raw, v, second)

	raw, err = srv.Admin.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var list []view
	json.Unmarshal(raw, &list)
	if len(list) != 2 {
		t.Fatalf("list: %s", raw)
	}
	for _, v := range list {
		want := map[string]*x509.Certificate{"first": first, "second": second}[v.ID]
		check("list "+v.ID, raw, v, want)
	}

	if !strings.Contains(srv.Log.String(), "caNotAfter="+first.NotAfter.UTC().Format(time.RFC3339)) {
		t.Errorf("the creation log line does not give the CA's expiry:\n%s", srv.Log.String())
	}

	earliest := first.NotAfter
	if second.NotAfter.Before(earliest) {
		earliest = second.NotAfter
	}
	resp, err := http.Get("http://" + srv.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got float64
	for _, line := range strings.Split(string(metrics), "\n") {
		if v, ok := strings.CutPrefix(line, "outbound_ca_next_expiry_timestamp_seconds "); ok {
			got, _ = strconv.ParseFloat(v, 64)
		}
	}
	if got != float64(earliest.Unix()) {
		t.Errorf("outbound_ca_next_expiry_timestamp_seconds = %v, want %d", got, earliest.Unix())
	}
}

// InterceptPostQuantum reaches the interception leg: a client that offers
// only the hybrid key exchange completes a handshake with it on, and not
// with it off.
func TestInterceptPostQuantumWired(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprint(on), func(t *testing.T) {
			srv := apptest.Start(t, app.Config{Script: securityDir + "policy.js", InterceptPostQuantum: on})
			c := srv.Create(t, "open", "Open")
			id, token := credsOf(t, c)
			code, conn := connectRaw(t, srv.ProxyAddr().String(), "pq.example:443", basicAuth(id, token))
			if code != 200 {
				t.Fatalf("CONNECT: %d", code)
			}
			pool := x509.NewCertPool()
			pool.AddCert(caOf(t, c.CAPEM))
			conn.SetDeadline(time.Now().Add(time.Minute))
			tc := tls.Client(conn, &tls.Config{
				ServerName: "pq.example", RootCAs: pool, MinVersion: tls.VersionTLS13,
				CurvePreferences: []tls.CurveID{tls.X25519MLKEM768},
			})
			err := tc.Handshake()
			if on && err != nil {
				t.Fatalf("hybrid-only client with InterceptPostQuantum: %v", err)
			}
			if !on && err == nil {
				t.Fatal("hybrid-only client completed a handshake without InterceptPostQuantum")
			}
			if on && tc.ConnectionState().CurveID != tls.X25519MLKEM768 {
				t.Errorf("key exchange %v", tc.ConnectionState().CurveID)
			}
		})
	}
}
