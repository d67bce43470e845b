package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"

	"github.com/outbound-dev/outbound/proxy/childenv"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

// proxyURL is what a sandbox puts in HTTP_PROXY.
func proxyURL(id, token, addr string) string {
	return (&url.URL{Scheme: "http", User: url.UserPassword(id, token), Host: addr}).String()
}

// proxyURLAt is the proxy URL raw at another host, and at port unless that
// is "". Its error never quotes raw, which holds the instance token.
func proxyURLAt(raw, host, port string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("bad proxy URL from the server (not shown: it holds the instance token)")
	}
	if port == "" {
		_, port, _ = net.SplitHostPort(u.Host)
	}
	u.Host = net.JoinHostPort(host, port)
	return u.String(), nil
}

// proxyAddrFromStatus reads the proxy listener address from /v1/status.
func proxyAddrFromStatus(status json.RawMessage) (string, error) {
	var s struct {
		Proxy struct {
			Listen string `json:"listen"`
		} `json:"proxy"`
	}
	if err := json.Unmarshal(status, &s); err != nil || s.Proxy.Listen == "" {
		return "", fmt.Errorf("control API status does not name the proxy listener")
	}
	return s.Proxy.Listen, nil
}

// proxyAddrOf is where the instance's traffic goes: its home, which in a
// fleet may be another replica than the one asked; for a server too old
// to name it, its proxy listener.
func proxyAddrOf(ctx context.Context, c *client.Client, id string) (string, error) {
	raw, err := c.Get(ctx, id)
	if err != nil {
		return "", err
	}
	var v struct {
		Home string `json:"home"`
	}
	if json.Unmarshal(raw, &v) == nil && v.Home != "" {
		return v.Home, nil
	}
	status, err := c.Status(ctx)
	if err != nil {
		return "", err
	}
	return proxyAddrFromStatus(status)
}

func cmdEnv(args []string, stdout, stderr io.Writer) int {
	var admin, adminToken, id, class, token, format, dir, proxyHost string
	fs := newFlags("env", "env --admin URL --id ID [--format sh|docker] [--dir DIR] [--token T]",
		`eval "$(outbound env --admin 127.0.0.1:3129 --id sbx-1)"`, stdout)
	fs.StringVar(&admin, "admin", "127.0.0.1:3129", "control API `URL`")
	fs.StringVar(&adminToken, "admin-token", os.Getenv("OUTBOUND_ADMIN_TOKEN"), "control API bearer `TOKEN`")
	fs.StringVar(&id, "id", "", "instance `ID` (created if missing)")
	fs.StringVar(&class, "class", "", "`CLASS` of the instance, when it is created")
	fs.StringVar(&token, "token", os.Getenv("OUTBOUND_INSTANCE_TOKEN"), "the `TOKEN` of an instance that already exists (also OUTBOUND_INSTANCE_TOKEN)")
	fs.StringVar(&format, "format", "sh", "output `FORMAT`: sh, or docker (an --env-file; mount DIR at "+filepath.Dir(childenv.CloudflareCAPath)+")")
	fs.StringVar(&dir, "dir", "", "`DIR` to write the CA and merged bundle into (default: a directory under the system temp dir)")
	fs.StringVar(&proxyHost, "proxy-host", "", "`HOST` the sandbox reaches the proxy at, e.g. host.docker.internal (default: the listen address)")
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if id == "" {
		return fail(stderr, "env", 2, "--id is required")
	}
	if format != "sh" && format != "docker" {
		return fail(stderr, "env", 2, "bad --format %q: want sh or docker", format)
	}
	ctx := context.Background()
	created, err := attach(ctx, client.New(admin, adminToken), id, class, token)
	if err != nil {
		return fail(stderr, "env", 1, "%v", err)
	}
	if proxyHost != "" {
		if created.ProxyURL, err = proxyURLAt(created.ProxyURL, proxyHost, ""); err != nil {
			return fail(stderr, "env", 1, "%v", err)
		}
	}
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "outbound-"+url.PathEscape(id))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(stderr, "env", 1, "%v", err)
	}
	paths, err := writeCAFiles(dir, created)
	if err != nil {
		return fail(stderr, "env", 1, "%v", err)
	}
	if format == "docker" {
		// Inside the container the files are where Cloudflare images look.
		certs := filepath.Dir(childenv.CloudflareCAPath)
		paths = childenv.Paths{CA: childenv.CloudflareCAPath, Bundle: filepath.Join(certs, filepath.Base(paths.Bundle))}
		os.WriteFile(filepath.Join(dir, filepath.Base(childenv.CloudflareCAPath)), []byte(created.CAPEM), 0o644)
		fmt.Fprintf(stdout, "# mount %s at %s\n", dir, certs)
	}
	out, err := childenv.Format(childenv.Vars(created.ID, created.ProxyURL, paths), format)
	if err != nil {
		return fail(stderr, "env", 2, "%v", err)
	}
	fmt.Fprint(stdout, out)
	return 0
}

func cmdCA(args []string, stdout, stderr io.Writer) int {
	var admin, adminToken, id string
	fs := newFlags("ca", "ca --admin URL --id ID",
		"outbound ca --admin 127.0.0.1:3129 --id sbx-1 > "+childenv.CloudflareCAPath, stdout)
	fs.StringVar(&admin, "admin", "127.0.0.1:3129", "control API `URL`")
	fs.StringVar(&adminToken, "admin-token", os.Getenv("OUTBOUND_ADMIN_TOKEN"), "control API bearer `TOKEN`")
	fs.StringVar(&id, "id", "", "instance `ID`")
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if id == "" {
		return fail(stderr, "ca", 2, "--id is required")
	}
	pem, err := client.New(admin, adminToken).CAPEM(context.Background(), id)
	if err != nil {
		return fail(stderr, "ca", 1, "%v", err)
	}
	stdout.Write(pem)
	return 0
}
