package main

import (
	"strings"
	"testing"
)

func TestProxyURLAt(t *testing.T) {
	got, err := proxyURLAt("http://sbx-1:tok@127.0.0.1:3128", "host.docker.internal", "")
	if err != nil || got != "http://sbx-1:tok@host.docker.internal:3128" {
		t.Fatalf("keeping the port: %q %v", got, err)
	}
	got, err = proxyURLAt("http://sbx-1:tok@127.0.0.1:3128", "198.18.0.1", "8080")
	if err != nil || got != "http://sbx-1:tok@198.18.0.1:8080" {
		t.Fatalf("with a port: %q %v", got, err)
	}
	// url.Parse's error quotes the URL, and the URL holds the token.
	const token = "tok-secret-5e1"
	_, err = proxyURLAt("http://sbx-1:"+token+"@a%20b:3128", "198.18.0.1", "3128")
	if err == nil || strings.Contains(err.Error(), token) {
		t.Fatalf("error %v: want one that does not hold the token", err)
	}
}
