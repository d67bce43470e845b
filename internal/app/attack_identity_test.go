package app_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"testing"

	"github.com/outbound-dev/outbound/internal/app"
	"github.com/outbound-dev/outbound/internal/app/apptest"
)

// Identity: a sandbox can only act as its own instance.
func TestIdentityCannotBeBorrowed(t *testing.T) {
	up := apptest.NewTLSUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }), "allowed.test")
	srv := apptest.Start(t, app.Config{
		Script:     securityDir + "policy.js",
		ConnectTo:  []string{up.ConnectTo("allowed.test", 443)},
		UpstreamCA: []string{up.CAFile},
	})
	a := srv.Create(t, "a", "Allow")
	b := srv.Create(t, "b", "Allow")
	aID, aTok := credsOf(t, a)
	bID, bTok := credsOf(t, b)
	proxyAddr := srv.ProxyAddr().String()
	try := func(id, tok string) int {
		c := apptest.ClientWithRoots(t, "http://"+id+":"+tok+"@"+proxyAddr, nil)
		code, _ := call(t, c, "GET", "http://allowed.test/", nil)
		return code
	}
	if code := try(aID, bTok); code != 407 {
		t.Errorf("a's id with b's token: %d, want 407", code)
	}
	if code := try(bID, aTok); code != 407 {
		t.Errorf("b's id with a's token: %d, want 407", code)
	}
	if code, _ := connectRaw(t, proxyAddr, "allowed.test:443", basicAuth(aID, bTok)); code != 407 {
		t.Errorf("CONNECT with a's id and b's token: %d, want 407", code)
	}

	// One instance's CA never validates another's interception.
	poolA := x509.NewCertPool()
	poolA.AppendCertsFromPEM([]byte(a.CAPEM))
	cross := apptest.ClientWithRoots(t, b.ProxyURL, poolA)
	if code, body := call(t, cross, "GET", "https://allowed.test/", nil); code != 0 {
		t.Errorf("b's interception validated with a's CA: %d %q", code, body)
	}
	if code, body := call(t, apptest.Client(t, b), "GET", "https://allowed.test/", nil); code != 200 {
		t.Fatalf("b with its own CA: %d %q", code, body)
	}

	// A deleted instance's token is dead.
	if err := srv.Admin.Delete(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if code := try(aID, aTok); code != 407 {
		t.Errorf("a deleted instance's credentials: %d, want 407", code)
	}
	if code, _ := connectRaw(t, proxyAddr, "allowed.test:443", basicAuth(aID, aTok)); code != 407 {
		t.Errorf("CONNECT with a deleted instance's credentials: %d, want 407", code)
	}
	// Re-creating the id issues a new token; the old one stays dead.
	srv.Create(t, "a", "Allow")
	if code := try(aID, aTok); code != 407 {
		t.Errorf("the old token after re-creating the id: %d, want 407", code)
	}
}
