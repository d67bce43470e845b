package instances

import (
	"context"
	"fmt"
	"testing"

	"github.com/outbound-dev/outbound/handlers/chain"
)

func patterns100(tag string) []string {
	var p []string
	for i := range 60 {
		p = append(p, fmt.Sprintf("h%d.%s.example.com", i, tag))
	}
	for i := range 35 {
		p = append(p, fmt.Sprintf("*.s%d.%s.example.net", i, tag))
	}
	return append(p, "api.*."+tag+".org", tag+".*", "*-"+tag+".io", "10.0.0.0/8", "2001:db8::/32")
}

// benchRegistry has 10,000 instances; the one benchmarked has runtime
// overrides with 100 patterns in each list and in its per-host table, and
// its class has 100 in each static list and table.
func benchRegistry(b *testing.B) (*Registry, *policies, string) {
	ctx := context.Background()
	cls := chain.ClassSpec{
		Name:         "Bench",
		AllowedHosts: patterns100("allow"),
		DeniedHosts:  patterns100("deny"),
		ByHostKeys:   patterns100("byhost"),
		Handlers:     []string{"h"},
		HasOutbound:  true,
	}
	r, pol := newRegistry(b, nil, cls)
	for i := range 10_000 {
		id := fmt.Sprintf("sbx-%05d", i)
		if _, _, err := r.Create(ctx, id, "Bench"); err != nil {
			b.Fatal(err)
		}
		if i%10 == 0 {
			r.DenyHost(ctx, id, fmt.Sprintf("x%d.com", i))
		}
	}
	const id = "sbx-04242"
	allowed := append(patterns100("rtallow"), "h7.byhost.example.com")
	if _, err := r.SetAllowedHosts(ctx, id, allowed); err != nil {
		b.Fatal(err)
	}
	if _, err := r.SetDeniedHosts(ctx, id, patterns100("rtdeny")); err != nil {
		b.Fatal(err)
	}
	var hosts []chain.HostChoice
	for _, p := range patterns100("rt") {
		hosts = append(hosts, chain.HostChoice{Host: p, Choice: chain.Choice{Method: "h"}})
	}
	if _, err := r.SetOutboundByHosts(ctx, id, hosts); err != nil {
		b.Fatal(err)
	}
	return r, pol, id
}

// BenchmarkDecideExact10k is one decision as the proxy makes it: find the
// instance, take its snapshot and the class, and run steps 1-4 for an
// exact host (decided by the static exact key at step 4).
func BenchmarkDecideExact10k(b *testing.B) {
	r, pol, id := benchRegistry(b)
	const h = "h7.byhost.example.com"
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		inst, _ := r.Get(id)
		d := chain.Decide(pol.get().Class(inst.Class()), inst.Runtime(), h)
		if d.Step != chain.StepByHost {
			b.Fatal(d.Step)
		}
	}
}

func BenchmarkAuthenticate10k(b *testing.B) {
	r, _, _ := benchRegistry(b)
	_, tok, _ := r.Create(context.Background(), "bench-auth", "Bench")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, ok := r.Authenticate("bench-auth", tok); !ok {
			b.Fatal("refused")
		}
	}
}
