package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "version", "outbound version", stdout)
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return fail(stderr, "version", 2, "unexpected argument %q", fs.Arg(0))
	}
	bi, ok := debug.ReadBuildInfo()
	fmt.Fprintln(stdout, versionLine(bi, ok))
	return 0
}

// versionLine is `outbound VERSION (COMMIT) GOVERSION` from the build
// info: the module version ("devel" for a build from a checkout without
// one), the VCS revision (12 digits, "-dirty" when the tree had changes;
// "unknown" when the build recorded none) and the Go toolchain.
func versionLine(bi *debug.BuildInfo, ok bool) string {
	version, commit, goVersion := "devel", "unknown", runtime.Version()
	if ok && bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			version = v
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
				if len(commit) > 12 {
					commit = commit[:12]
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && commit != "unknown" {
			commit += "-dirty"
		}
	}
	return fmt.Sprintf("outbound %s (%s) %s", version, commit, goVersion)
}
