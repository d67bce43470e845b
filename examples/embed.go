// Package examples holds the policy scripts people copy. They are embedded
// so that `outbound demo` runs with no files around it.
package examples

import "embed"

// FS holds every example script.
//
//go:embed *.js *.ts
var FS embed.FS
