package examples_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestFleetCompose checks examples/fleet/docker-compose.yml, which CI
// cannot run (no Docker engine): it parses, the files it names exist, and
// each replica is told what a fleet needs (the shared Redis, its own
// --advertise that matches its listener and service name, the KV binding
// its script uses), with Redis persisting every acknowledged write.
func TestFleetCompose(t *testing.T) {
	const dir = "fleet"
	raw, err := os.ReadFile(filepath.Join(dir, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Build struct {
				Context, Dockerfile string
			}
			Command     []string
			Environment map[string]string
			DependsOn   map[string]struct{ Condition string } `yaml:"depends_on"`
			Volumes     []string
			Networks    []string
			Ports       []string
		}
		Networks map[string]struct{ Internal bool }
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	env := regexp.MustCompile(`\$\{([A-Z_]+)(:\?[^}]*)?\}`)
	expand := func(s string) string { return env.ReplaceAllString(s, "value-of-$1") }

	redis, ok := compose.Services["redis"]
	if !ok {
		t.Fatal("no redis service")
	}
	rc := strings.Join(redis.Command, " ")
	if !strings.Contains(rc, "--appendonly yes") || !strings.Contains(rc, "--appendfsync always") || !strings.Contains(rc, "--requirepass") {
		t.Errorf("redis does not persist every write or has no password: %s", rc)
	}
	known := []string{"--script", "--kv", "--store", "--listen", "--admin", "--advertise"}
	var replicas []string
	for name, svc := range compose.Services {
		if name == "redis" {
			continue
		}
		replicas = append(replicas, name)
		if len(svc.Command) == 0 || svc.Command[0] != "serve" || len(svc.Command)%2 != 1 {
			t.Fatalf("%s: command %v is not serve with flag-value pairs", name, svc.Command)
		}
		flags := map[string]string{}
		for i := 1; i < len(svc.Command); i += 2 {
			f := svc.Command[i]
			if !slices.Contains(known, f) {
				t.Errorf("%s: unexpected flag %s", name, f)
			}
			flags[f] = expand(svc.Command[i+1])
		}
		storeURL := flags["--store"]
		if storeURL == "" {
			storeURL = expand(svc.Environment["OUTBOUND_STORE"])
		}
		if !strings.HasPrefix(storeURL, "redis://:value-of-REDIS_PASSWORD@redis:6379/") {
			t.Errorf("%s: store %q is not the compose Redis", name, storeURL)
		}
		_, listenPort, _ := strings.Cut(flags["--listen"], ":")
		if flags["--advertise"] != name+":"+listenPort {
			t.Errorf("%s: --advertise %q, want %s:%s (its service name and proxy port)", name, flags["--advertise"], name, listenPort)
		}
		if svc.DependsOn["redis"].Condition != "service_healthy" {
			t.Errorf("%s: does not wait for a healthy Redis", name)
		}
		if !slices.Contains(svc.Networks, "sandboxes") || !slices.Contains(svc.Networks, "fleet") {
			t.Errorf("%s: networks %v", name, svc.Networks)
		}
		// The script is mounted from the repository and binds the KV it uses.
		var script string
		for _, v := range svc.Volumes {
			src, rest, _ := strings.Cut(v, ":")
			if strings.HasPrefix(rest, flags["--script"]+":") || rest == flags["--script"] {
				script = filepath.Join(dir, src)
			}
		}
		body, err := os.ReadFile(script)
		if script == "" || err != nil {
			t.Fatalf("%s: the script %s is not mounted from an existing file: %v", name, flags["--script"], err)
		}
		if !strings.Contains(string(body), "env."+flags["--kv"]+".") {
			t.Errorf("%s: the script does not use the KV binding %s", name, flags["--kv"])
		}
		ctx := filepath.Join(dir, svc.Build.Context)
		if _, err := os.Stat(filepath.Join(ctx, svc.Build.Dockerfile)); err != nil {
			t.Errorf("%s: Dockerfile: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(ctx, "go.mod")); err != nil {
			t.Errorf("%s: the build context is not the repository root: %v", name, err)
		}
	}
	if len(replicas) != 2 {
		t.Fatalf("replicas %v, want two", replicas)
	}
	for _, n := range []string{"fleet", "sandboxes"} {
		if !compose.Networks[n].Internal {
			t.Errorf("network %s must be internal", n)
		}
	}
}
