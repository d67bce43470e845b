// Package platform says what the operating system under outbound can do,
// so that every build of outbound compiles on every supported system and a
// feature the system lacks fails with one clear line instead of a build
// error.
//
// The pattern for a Linux-only feature (network namespaces, TUN devices,
// SO_ORIGINAL_DST): its package keeps the real code in files named
// *_linux.go and, in a file with the build constraint `//go:build !linux`,
// the same exported functions returning Unsupported("the feature's flag").
// The CLI calls LinuxOnly("--flag") before doing any work, so the user sees
// `outbound run: --jail is Linux-only (this is darwin/arm64)` and exit
// status 1, and never a half-started feature.
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
// "FEATURE is Linux-only (this is darwin/arm64)". errors.Is(err,
// errors.ErrUnsupported) is true of it.
func Unsupported(feature string) error {
	return &unsupportedError{feature: feature}
}

type unsupportedError struct{ feature string }

func (e *unsupportedError) Error() string {
	return fmt.Sprintf("%s is Linux-only (this is %s/%s)", e.feature, runtime.GOOS, runtime.GOARCH)
}

func (e *unsupportedError) Is(target error) bool { return target == errors.ErrUnsupported }

// LinuxOnly returns nil on Linux, and Unsupported(feature) elsewhere.
func LinuxOnly(feature string) error {
	if runtime.GOOS == "linux" {
		return nil
	}
	return Unsupported(feature)
}
