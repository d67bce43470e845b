// Package ui is the live view, the web page a person opens on the admin
// listener at /ui/: instances and their effective policy, decisions and
// console lines as they happen, the script's status, a handler switch and
// HAR downloads. Its files are embedded in the binary and use only the
// control API, so the page needs no network and no build step; it holds no
// data of its own and is served without the admin token, which the page
// asks for and sends as a header on every call.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// csp lets the page load only its own files and talk only to its own
// origin; sandbox-controlled text (hosts, paths, console lines) is written
// as text nodes, and this is the second line of defence.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// Handler serves the page's files; mount it with the /ui prefix stripped.
func Handler() http.Handler {
	static, err := fs.Sub(files, "static")
	if err != nil { // the directory is embedded above
		panic(err)
	}
	fsrv := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		fsrv.ServeHTTP(w, r)
	})
}
