// Package docs is outbound's user documentation, in Markdown. It holds no
// code: its test checks that every relative link in README.md, SECURITY.md
// and docs/*.md resolves to a file or heading inside the repository, so a
// clone never has a dead link or one that points outside it.
package docs
