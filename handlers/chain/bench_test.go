package chain

import (
	"fmt"
	"testing"
)

// patterns100 is a realistic list of 100: 60 exact names, 35 suffix globs,
// 3 other globs and 2 CIDRs.
func patterns100(tag string) []string {
	var p []string
	for i := range 60 {
		p = append(p, fmt.Sprintf("h%d.%s.example.com", i, tag))
	}
	for i := range 35 {
		p = append(p, fmt.Sprintf("*.s%d.%s.example.net", i, tag))
	}
	p = append(p, "api.*."+tag+".org", tag+".*", "*-"+tag+".io", "10.0.0.0/8", "2001:db8::/32")
	return p
}

// BenchClass is a class and runtime with 100 patterns in every list and
// table, for BenchmarkDecideExact here and in package instances.
func benchPolicy(b *testing.B) (*ClassPolicy, *Runtime) {
	allowed := append(patterns100("allow"), "h7.byhost.example.com")
	p := mustClass(b, ClassSpec{
		Name:         "Bench",
		AllowedHosts: allowed,
		DeniedHosts:  patterns100("deny"),
		ByHostKeys:   patterns100("byhost"),
		Handlers:     []string{"h"},
		HasOutbound:  true,
	})
	var o Overrides
	for _, k := range patterns100("rt") {
		o.ByHost = append(o.ByHost, HostChoice{Host: k, Choice: Choice{Method: "h"}})
	}
	return p, mustRuntime(b, o)
}

// BenchmarkDecideExact decides an exact host through steps 1-4: not denied
// (all 100 deny patterns considered), allowed by an exact entry, no runtime
// key, then a static exact key.
func BenchmarkDecideExact(b *testing.B) {
	p, rt := benchPolicy(b)
	const h = "h7.byhost.example.com"
	if d := Decide(p, rt, h); d.Step != StepByHost {
		b.Fatalf("bench host decided by %v", d.Step)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(p, rt, h); d.Step != StepByHost {
			b.Fatal(d.Step)
		}
	}
}

// BenchmarkDecideRuntimeGlob is decided by a runtime suffix glob at step 3.
func BenchmarkDecideRuntimeGlob(b *testing.B) {
	p, rt := benchPolicy(b)
	const h = "x.s20.rt.example.net"
	p2 := *p
	p2.allowed = nil
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(&p2, rt, h); d.Step != StepByHostRuntime {
			b.Fatal(d.Step)
		}
	}
}
