// Package layers holds no code: its test reads the import graph of the
// whole module with `go list` and fails when a package imports across a
// layer boundary, so the house described in docs/architecture.md stays
// true as it grows.
package layers
