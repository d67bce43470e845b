package policy

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/outbound-dev/outbound/internal/store/bolt"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/engine/reload"
	"github.com/outbound-dev/outbound/handlers/instances"
)

// TestFromReloader wires the Service as cmd does: a Reloader compiling the
// policy per generation, the bbolt store for instances and KV, and a
// reload that breaks a pattern keeps the last good generation.
func TestFromReloader(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	script := filepath.Join(dir, "policy.js")
	src, err := os.ReadFile(filepath.Join("..", "..", "testdata", "handlers", "noblock.js"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(script, src, 0o600)
	st, err := bolt.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rl, err := reload.New(ctx, reload.Options{
		Path:    script,
		Compile: CompilePolicy,
		Pool:    engine.PoolOptions{Size: 1, Fetch: http.DefaultTransport},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	scripts := FromReloader(rl)
	reg, err := instances.Open(ctx, instances.Options{Store: st, Policy: PolicyOf(scripts)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Options{Scripts: scripts, Registry: reg, Env: rl.Env, Upstream: http.DefaultTransport})
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := reg.Create(ctx, "sbx", "")
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := svc.Authenticate("sbx", tok)
	req, _ := http.NewRequest("GET", "http://allowed.test/", nil)
	resp, out := svc.Handle(ctx, inst, req)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" || out.Step != "by_host" {
		t.Fatalf("got %d %q %+v", resp.StatusCode, b, out)
	}
	// a bad pattern fails the reload; the last good generation serves on
	os.WriteFile(script, []byte(`export default { allowedHosts: ["bad host"] };`), 0o600)
	if err := rl.Reload(ctx); err == nil {
		t.Fatal("reload with a bad pattern succeeded")
	}
	req, _ = http.NewRequest("GET", "http://allowed.test/", nil)
	resp, out = svc.Handle(ctx, inst, req)
	resp.Body.Close()
	if resp.StatusCode != 200 || out.Step != "by_host" {
		t.Fatalf("after a failed reload: %d %+v", resp.StatusCode, out)
	}
}
