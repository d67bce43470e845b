package main

import (
	"debug/buildinfo"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionLine(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"no build info", nil, false, "outbound devel (unknown) "},
		{"checkout without vcs", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, true,
			"outbound devel (unknown) go1.26.8"},
		{"clean checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
			Settings: vcs("vcs", "git", "vcs.revision", "41d51d3d483eae52d57d92f9200f4f3c65bc29ed", "vcs.modified", "false")}, true,
			"outbound devel (41d51d3d483e) go1.26.8"},
		{"dirty checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261130035211-41d51d3d483e+dirty"},
			Settings: vcs("vcs.revision", "41d51d3d483eae52d57d92f9200f4f3c65bc29ed", "vcs.modified", "true")}, true,
			"outbound v0.0.0-20261130035211-41d51d3d483e+dirty (41d51d3d483e-dirty) go1.26.8"},
		{"go install of a release", &debug.BuildInfo{GoVersion: "go1.27.0", Main: debug.Module{Version: "v1.2.3"}}, true,
			"outbound v1.2.3 (unknown) go1.27.0"},
	} {
		got := versionLine(tc.bi, tc.ok)
		if tc.bi == nil {
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("%s: %q", tc.name, got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Both spellings print the same one line, made from the binary's own
// build info.
func TestVersionCommand(t *testing.T) {
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	want := versionLine(bi, true)
	if !regexp.MustCompile(`^outbound \S+ \((unknown|[0-9a-f]{12}(-dirty)?)\) go1\.\S+$`).MatchString(want) {
		t.Fatalf("version line %q has the wrong shape", want)
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, stderr, code := outbound(t, nil, args...)
		if code != 0 || out != want+"\n" || stderr != "" {
			t.Errorf("outbound %v: exit %d, stdout %q, stderr %q; want %q", args, code, out, stderr, want)
		}
	}
	if _, _, code := outbound(t, nil, "version", "extra"); code != 2 {
		t.Errorf("version with an argument: exit %d, want 2", code)
	}
}
