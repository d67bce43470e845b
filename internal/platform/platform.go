// Package platform says what the operating system under outbound can do,
// so that every build of outbound compiles on every supported system and a
// feature the system lacks fails with one clear line instead of a build
// error.
//
// The pattern for a Linux-only feature (network namespaces, TUN devices,
// SO_ORIGINAL_DST): its package keeps the real code in files named
// *_linux.go and, in a file with the build constraint `//go:build !linux`,
// the same exported functions returning Unsupported(flag, needs). The CLI
// (or the assembly) calls LinuxOnly(flag, needs) before doing any work, so
// the user sees `outbound run: --jail is Linux-only (this is darwin/arm64):
// it needs Linux network namespaces and a TUN device` and exit status 1,
// never a half-started feature. Tests that need the feature carry
// `//go:build linux`: `make cross` vets the tests for macOS too.
//
// It owns no feature itself; DieWithParent is here because both the CLI
// and the load harnesses start children that must not outlive them.
package platform

import (
	"errors"
	"fmt"
	"runtime"
)

// Unsupported is the error of a Linux-only feature on another system:
// "FEATURE is Linux-only (this is darwin/arm64): it needs NEEDS".
// errors.Is(err, errors.ErrUnsupported) is true of it.
func Unsupported(feature, needs string) error {
	return &unsupportedError{feature: feature, needs: needs}
}

type unsupportedError struct{ feature, needs string }

func (e *unsupportedError) Error() string {
	return fmt.Sprintf("%s is Linux-only (this is %s/%s): it needs %s", e.feature, runtime.GOOS, runtime.GOARCH, e.needs)
}

func (e *unsupportedError) Is(target error) bool { return target == errors.ErrUnsupported }

// LinuxOnly returns nil on Linux, and Unsupported(feature, needs)
// elsewhere.
func LinuxOnly(feature, needs string) error {
	if runtime.GOOS == "linux" {
		return nil
	}
	return Unsupported(feature, needs)
}
