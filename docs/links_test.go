package docs

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/text"
)

// docFiles are the Markdown files whose links must resolve, relative to
// the repository root.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	files := []string{"README.md", "SECURITY.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			rel, _ := filepath.Rel(root, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestRelativeLinksResolve(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := docFiles(t, root)
	if !slices.Contains(files, "docs/README.md") {
		t.Fatalf("no docs/README.md among %v", files)
	}
	for _, p := range checkLinks(root, files) {
		t.Error(p)
	}
}

// The checker itself: each kind of broken link is reported, and good ones
// are not.
func TestCheckerFindsBrokenLinks(t *testing.T) {
	root := t.TempDir()
	write := func(name, body string) {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("README.md", "# Top\n\n## Evaluation order (first match wins)\n\n## Top\n\n"+
		"[ok](docs/a.md) [ok dir](docs/) [ok anchor](docs/a.md#the-cli-flags) [ok self](#evaluation-order-first-match-wins) [dup](#top-1)\n"+
		"[ok web](https://example.com/x) [ok mail](mailto:a@example.com) ![ok image](docs/pic.png)\n"+
		"[ref][r]\n\n[r]: docs/a.md#missing-heading\n\n"+
		"`[in code](nowhere.md)`\n\n```\n[in a block](nowhere.md)\n```\n")
	write("docs/a.md", "# A\n\n## The `CLI` flags\n\n[gone](gone.md) [up](../README.md#top) [out](../../shared/spec) [abs](/etc/passwd) [esc](b%20c.md) <a href=\"html.md\">x</a>\n")
	write("docs/b c.md", "# B\n")
	write("docs/pic.png", "")
	got := checkLinks(root, []string{"README.md", "docs/a.md"})
	want := []string{
		`README.md: link "docs/a.md#missing-heading": docs/a.md has no heading #missing-heading`,
		`docs/a.md: link "gone.md": docs/gone.md does not exist`,
		`docs/a.md: link "../../shared/spec": points outside the repository`,
		`docs/a.md: link "/etc/passwd": an absolute path; link relative to the file`,
		`docs/a.md: link "html.md": docs/html.md does not exist`,
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"Evaluation order (first match wins)": "evaluation-order-first-match-wins",
		"The `blocked` hook":                  "the-blocked-hook",
		"`outbound serve`":                    "outbound-serve",
		"Limits on clients":                   "limits-on-clients",
		"HTTPS, CONNECT and other traffic":    "https-connect-and-other-traffic",
		"Fleet: `serve --store URL`":          "fleet-serve---store-url",
		"snake_case_name":                     "snake_case_name",
		"Ünïcode and 日本":                      "ünïcode-and-日本",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}

var md = goldmark.New(goldmark.WithExtensions(extension.GFM))

// htmlLink finds links in raw HTML, which Markdown leaves alone.
var htmlLink = regexp.MustCompile(`(?i)\b(?:href|src)\s*=\s*"([^"]*)"`)

// checkLinks returns one line per broken relative link in files (paths
// relative to root, with forward slashes).
func checkLinks(root string, files []string) []string {
	var problems []string
	anchors := map[string]map[string]bool{} // file -> heading slugs
	headings := func(rel string) (map[string]bool, error) {
		if a, ok := anchors[rel]; ok {
			return a, nil
		}
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil {
			return nil, err
		}
		a := map[string]bool{}
		count := map[string]int{}
		doc := md.Parser().Parse(text.NewReader(src))
		ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
			if h, ok := n.(*ast.Heading); ok && entering {
				s := slug(plain(h, src))
				if c := count[s]; c > 0 {
					a[s+"-"+strconv.Itoa(c)] = true
				} else {
					a[s] = true
				}
				count[s]++
				return ast.WalkSkipChildren, nil
			}
			return ast.WalkContinue, nil
		})
		anchors[rel] = a
		return a, nil
	}
	for _, file := range files {
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", file, err))
			continue
		}
		var dests []string
		doc := md.Parser().Parse(text.NewReader(src))
		ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
			if !entering {
				return ast.WalkContinue, nil
			}
			switch n := n.(type) {
			case *ast.Link:
				dests = append(dests, string(n.Destination))
			case *ast.Image:
				dests = append(dests, string(n.Destination))
			case *ast.RawHTML:
				for i := 0; i < n.Segments.Len(); i++ {
					seg := n.Segments.At(i)
					for _, m := range htmlLink.FindAllSubmatch(seg.Value(src), -1) {
						dests = append(dests, string(m[1]))
					}
				}
			case *ast.HTMLBlock:
				var b bytes.Buffer
				for i := 0; i < n.Lines().Len(); i++ {
					seg := n.Lines().At(i)
					b.Write(seg.Value(src))
				}
				for _, m := range htmlLink.FindAllSubmatch(b.Bytes(), -1) {
					dests = append(dests, string(m[1]))
				}
			}
			return ast.WalkContinue, nil
		})
		for _, d := range dests {
			if msg := checkLink(root, file, d, headings); msg != "" {
				problems = append(problems, fmt.Sprintf("%s: link %q: %s", file, d, msg))
			}
		}
	}
	return problems
}

// checkLink says what is wrong with one link destination, or "".
func checkLink(root, file, dest string, headings func(string) (map[string]bool, error)) string {
	u, err := url.Parse(dest)
	if err != nil {
		return fmt.Sprintf("does not parse: %v", err)
	}
	if u.Scheme != "" || u.Host != "" {
		return "" // a web or mail address
	}
	target := file
	if u.Path != "" {
		if strings.HasPrefix(u.Path, "/") {
			return "an absolute path; link relative to the file"
		}
		target = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(file), u.Path)))
		if target == ".." || strings.HasPrefix(target, "../") {
			return "points outside the repository"
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(target))); err != nil {
			return target + " does not exist"
		}
	}
	if u.Fragment == "" || !strings.HasSuffix(target, ".md") {
		return ""
	}
	a, err := headings(target)
	if err != nil {
		return err.Error()
	}
	if !a[u.Fragment] {
		return fmt.Sprintf("%s has no heading #%s", target, u.Fragment)
	}
	return ""
}

// plain is the text of a node as GitHub reads it for a heading's anchor:
// the characters of its text and code spans, without markup.
func plain(n ast.Node, src []byte) string {
	var b strings.Builder
	ast.Walk(n, func(c ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch c := c.(type) {
		case *ast.Text:
			b.Write(c.Segment.Value(src))
		case *ast.String:
			b.Write(c.Value)
		}
		return ast.WalkContinue, nil
	})
	return b.String()
}

// slug is GitHub's anchor for a heading: lower case, every character but
// letters, digits, '_', '-' and spaces dropped, spaces turned into '-'.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
