package main

import (
	"flag"
	"io"
	"slices"
	"testing"
)

// TestInterspersed: flags may stand before, between and after the other
// arguments, which keep their order.
func TestInterspersed(t *testing.T) {
	for _, args := range [][]string{
		{"a", "--class", "C", "b", "--json"},
		{"--json", "a", "b", "--class", "C"},
		{"--class", "C", "--json", "a", "b"},
	} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		class, asJSON := fs.String("class", "", ""), fs.Bool("json", false, "")
		pos, err := interspersed(fs, args)
		if err != nil || !slices.Equal(pos, []string{"a", "b"}) || *class != "C" || !*asJSON {
			t.Errorf("%q: %q %v class %q json %v", args, pos, err, *class, *asJSON)
		}
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := interspersed(fs, []string{"a", "--nope"}); err == nil {
		t.Error("an unknown flag after an argument was accepted")
	}
}
