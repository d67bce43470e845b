// Package dotenv parses dotenv files (.dev.vars, --env-file) into a map of
// variables. It owns only the file format; watching the file and building
// the handler env is the reload package's job.
//
// The format:
//
//	# a comment; blank lines are skipped
//	KEY=value               # unquoted: trimmed, " #..." starts a comment
//	export KEY=value        # a leading "export " is ignored
//	KEY='literal $ \n'      # single quotes: no escapes, may span lines
//	KEY="a\nb \"q\" \\"     # double quotes: \n \r \t \" \\ \$; may span lines
//
// Keys start with a letter or '_' and continue with letters, digits, '_',
// '.' or '-'. A later duplicate key wins. There is no ${VAR} expansion.
// CRLF line endings and a leading UTF-8 BOM are accepted.
//
// Values are secrets: an error names the line number and what was wrong,
// never any text of the line.
package dotenv

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// Parse reads a whole dotenv document from r.
func Parse(r io.Reader) (map[string]string, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("dotenv: read: %w", err)
	}
	return ParseBytes(data)
}

// ParseBytes parses a whole dotenv document.
func ParseBytes(data []byte) (map[string]string, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	p := parser{src: string(data), line: 1}
	vars := make(map[string]string)
	for !p.eof() {
		key, value, ok, err := p.entry()
		if err != nil {
			return nil, err
		}
		if ok {
			vars[key] = value
		}
	}
	return vars, nil
}

// Error messages are fixed strings so that no text of the input can leak
// into them; the fuzz test holds the package to that.
const (
	errNoEquals        = "expected KEY=VALUE"
	errBadKey          = "invalid key name"
	errUnterminated    = "unterminated quoted value"
	errTrailingGarbage = "unexpected text after quoted value"
)

func lineError(line int, msg string) error {
	return fmt.Errorf("dotenv: line %d: %s", line, msg)
}

type parser struct {
	src  string
	pos  int
	line int // 1-based line of src[pos]
}

func (p *parser) eof() bool { return p.pos >= len(p.src) }

// restOfLine returns the text up to the end of the current line (without
// the line ending) and advances past the line ending.
func (p *parser) restOfLine() string {
	rest := p.src[p.pos:]
	i := strings.IndexByte(rest, '\n')
	if i < 0 {
		p.pos = len(p.src)
		return strings.TrimSuffix(rest, "\r")
	}
	p.pos += i + 1
	p.line++
	return strings.TrimSuffix(rest[:i], "\r")
}

// entry consumes one logical entry: a blank or comment line (ok false), or
// one KEY=VALUE that may span several lines when its value is quoted.
func (p *parser) entry() (key, value string, ok bool, err error) {
	start := p.line
	p.skipSpace()
	if p.eof() {
		return "", "", false, nil
	}
	if rest := p.src[p.pos:]; rest[0] == '\n' || rest[0] == '#' || rest == "\r" || strings.HasPrefix(rest, "\r\n") {
		p.restOfLine()
		return "", "", false, nil
	}
	// Everything up to '=' is "export"? KEY, which never spans lines.
	rest := p.src[p.pos:]
	eol := strings.IndexByte(rest, '\n')
	if eol < 0 {
		eol = len(rest)
	}
	eq := strings.IndexByte(rest[:eol], '=')
	if eq < 0 {
		p.restOfLine()
		return "", "", false, lineError(start, errNoEquals)
	}
	key = strings.TrimRight(rest[:eq], " \t")
	if after, found := strings.CutPrefix(key, "export"); found && after != "" && (after[0] == ' ' || after[0] == '\t') {
		key = strings.TrimLeft(after, " \t")
	}
	if !validKey(key) {
		p.restOfLine()
		return "", "", false, lineError(start, errBadKey)
	}
	p.pos += eq + 1
	blank := p.skipSpace()
	if p.eof() {
		return key, "", true, nil
	}
	switch p.src[p.pos] {
	case '\'':
		value, err = p.quoted('\'', start)
	case '"':
		value, err = p.quoted('"', start)
	case '#':
		// "KEY= # note" is empty; "KEY=#secret" is a value.
		line := p.restOfLine()
		if !blank {
			value = unquoted(line)
		}
	default:
		value = unquoted(p.restOfLine())
	}
	if err != nil {
		return "", "", false, err
	}
	return key, value, true, nil
}

// skipSpace skips blanks and reports whether there were any.
func (p *parser) skipSpace() bool {
	from := p.pos
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t') {
		p.pos++
	}
	return p.pos > from
}

// quoted consumes a quoted value starting at the opening quote, then the
// rest of its closing line, which may hold only blanks and a comment.
func (p *parser) quoted(q byte, start int) (string, error) {
	p.pos++ // the opening quote
	var b strings.Builder
	for {
		if p.eof() {
			return "", lineError(start, errUnterminated)
		}
		c := p.src[p.pos]
		switch {
		case c == q:
			p.pos++
			tail := strings.TrimLeft(p.restOfLine(), " \t")
			if tail != "" && tail[0] != '#' {
				return "", lineError(start, errTrailingGarbage)
			}
			return b.String(), nil
		case c == '\r' && p.pos+1 < len(p.src) && p.src[p.pos+1] == '\n':
			p.pos++ // CRLF inside a value is a plain newline
		case c == '\n':
			p.line++
			b.WriteByte('\n')
			p.pos++
		case c == '\\' && q == '"' && p.pos+1 < len(p.src):
			if esc, ok := escape(p.src[p.pos+1]); ok {
				b.WriteByte(esc)
				p.pos += 2
			} else {
				// Unknown escapes stay literal, so Windows paths survive.
				b.WriteByte(c)
				p.pos++
			}
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
}

func escape(c byte) (byte, bool) {
	switch c {
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	case '"', '\\', '$':
		return c, true
	}
	return 0, false
}

// unquoted trims an unquoted value and strips a trailing comment, which
// starts at a '#' preceded by a blank, so URL fragments like a#b survive.
func unquoted(s string) string {
	for i := 1; i < len(s); i++ {
		if s[i] == '#' && (s[i-1] == ' ' || s[i-1] == '\t') {
			s = s[:i]
			break
		}
	}
	return strings.TrimRight(s, " \t")
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z'):
		case i > 0 && (('0' <= c && c <= '9') || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}
