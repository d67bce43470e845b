package hostmatch

import (
	"fmt"
	"testing"
)

func benchList(b *testing.B) *List {
	var pats []string
	for i := range 50 {
		pats = append(pats, fmt.Sprintf("host%d.example.com", i))
	}
	for i := range 45 {
		pats = append(pats, fmt.Sprintf("*.svc%d.example.net", i))
	}
	for i := range 5 {
		pats = append(pats, fmt.Sprintf("10.%d.0.0/16", i))
	}
	l, err := Compile(pats)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func BenchmarkListExact(b *testing.B) {
	l := benchList(b)
	b.ReportAllocs()
	for b.Loop() {
		if !l.Match("host42.example.com") {
			b.Fatal("no match")
		}
	}
}

func BenchmarkListMissAllGlobs(b *testing.B) {
	l := benchList(b)
	b.ReportAllocs()
	for b.Loop() {
		if l.Match("nothing.example.org") {
			b.Fatal("match")
		}
	}
}

func BenchmarkListCIDR(b *testing.B) {
	l := benchList(b)
	b.ReportAllocs()
	for b.Loop() {
		if !l.Match("10.4.1.1") {
			b.Fatal("no match")
		}
	}
}

func BenchmarkTableExact(b *testing.B) {
	var t Table[int]
	for i := range 100 {
		t.Add(fmt.Sprintf("*.svc%d.example.net", i), i)
		t.Add(fmt.Sprintf("host%d.example.com", i), i)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := t.Lookup("host42.example.com"); !ok {
			b.Fatal("no match")
		}
	}
}
