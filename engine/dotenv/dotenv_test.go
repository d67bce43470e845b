package dotenv

import (
	"errors"
	"maps"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
	}{
		{"empty", "", map[string]string{}},
		{"blank and comments", "\n  \n# c\n   # indented\n\t\n", map[string]string{}},
		{"simple", "A=1\nB=two", map[string]string{"A": "1", "B": "two"}},
		{"empty value", "A=\nB=   \n", map[string]string{"A": "", "B": ""}},
		{"blanks around equals", "A = 1 \n  B\t=\t2\t", map[string]string{"A": "1", "B": "2"}},
		{"export", "export A=1\nexport\tB=2\nexport=3", map[string]string{"A": "1", "B": "2", "export": "3"}},
		{"key chars", "_a.b-c9=x\nlower=y", map[string]string{"_a.b-c9": "x", "lower": "y"}},
		{"equals in value", "URL=postgres://u:p@h/db?a=b", map[string]string{"URL": "postgres://u:p@h/db?a=b"}},
		{"unquoted comment", "A=val # note\nB=val\t# note\nC=a#b\nD=#secret\nE= # only a note", map[string]string{"A": "val", "B": "val", "C": "a#b", "D": "#secret", "E": ""}},
		{"unquoted inner blanks", "A=hello   world  ", map[string]string{"A": "hello   world"}},
		{"unquoted quotes inside", `A=it's "x"`, map[string]string{"A": `it's "x"`}},
		{"single quoted literal", `A='a\nb $X "q" # not a comment'`, map[string]string{"A": `a\nb $X "q" # not a comment`}},
		{"single quoted multi-line", "A='l1\nl2'\nB=2", map[string]string{"A": "l1\nl2", "B": "2"}},
		{"single quoted then comment", "A='x'  # c", map[string]string{"A": "x"}},
		{"double escapes", `A="a\nb\tc\r\"q\" \\ \$HOME"`, map[string]string{"A": "a\nb\tc\r\"q\" \\ $HOME"}},
		{"double unknown escape literal", `A="C:\Users\x"`, map[string]string{"A": `C:\Users\x`}},
		{"double multi-line", "KEY=\"-----BEGIN-----\nabc\n-----END-----\"\nNEXT=1", map[string]string{"KEY": "-----BEGIN-----\nabc\n-----END-----", "NEXT": "1"}},
		{"double hash inside", `A="a # b"`, map[string]string{"A": "a # b"}},
		{"empty quotes", `A=""` + "\n" + `B=''`, map[string]string{"A": "", "B": ""}},
		{"crlf", "A=1\r\nB=\"x\r\ny\"\r\n# c\r\n\r\nC='z'\r\n", map[string]string{"A": "1", "B": "x\ny", "C": "z"}},
		{"bom", "\ufeffA=1", map[string]string{"A": "1"}},
		{"duplicate last wins", "A=1\nA=2", map[string]string{"A": "2"}},
		{"no trailing newline", "A=1", map[string]string{"A": "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBytes([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseBytes: %v", err)
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		line     int
		msg      string
		mustNotC []string // secret text that must not appear in the error
	}{
		{"no equals", "A=1\nsk-live-secret\n", 2, errNoEquals, []string{"sk-live-secret"}},
		{"bad key digit", "9A=topsecret", 1, errBadKey, []string{"topsecret", "9A"}},
		{"bad key space", "MY KEY=topsecret", 1, errBadKey, []string{"topsecret"}},
		{"empty key", "=topsecret", 1, errBadKey, []string{"topsecret"}},
		{"export only", "export SECRETNAME", 1, errNoEquals, []string{"SECRETNAME"}},
		{"unterminated double", "A=1\nB=\"hunter2\nmore\n", 2, errUnterminated, []string{"hunter2", "more"}},
		{"unterminated single", "\n\nB='hunter2", 3, errUnterminated, []string{"hunter2"}},
		{"escaped closing quote", `A="hunter2\"`, 1, errUnterminated, []string{"hunter2"}},
		{"garbage after double", `A="hunter2"tail`, 1, errTrailingGarbage, []string{"hunter2", "tail"}},
		{"garbage after multi-line single", "A='x\ny' hunter2\n", 1, errTrailingGarbage, []string{"hunter2"}},
		{"line counted after multi-line", "A=\"1\n2\n3\"\nbroken-hunter2\n", 4, errNoEquals, []string{"hunter2"}},
		{"lone carriage return", "\rA=hunter2", 1, errBadKey, []string{"hunter2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBytes([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseBytes = %q, want an error", got)
			}
			want := lineError(tt.line, tt.msg).Error()
			if err.Error() != want {
				t.Fatalf("error %q, want %q", err, want)
			}
			for _, s := range tt.mustNotC {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error %q leaks %q", err, s)
				}
			}
		})
	}
}

func TestParseReader(t *testing.T) {
	got, err := Parse(strings.NewReader("A=1\n"))
	if err != nil || got["A"] != "1" {
		t.Fatalf("Parse = %q, %v", got, err)
	}
	boom := errors.New("disk on fire")
	if _, err := Parse(iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Fatalf("Parse(failing reader) error = %v, want wrapping %v", err, boom)
	}
}

// errShape is every error ParseBytes may return: a line number and one of
// the fixed messages, so no input text can be in it.
var errShape = regexp.MustCompile(`^dotenv: line [1-9][0-9]*: (` + strings.Join([]string{
	regexp.QuoteMeta(errNoEquals), regexp.QuoteMeta(errBadKey),
	regexp.QuoteMeta(errUnterminated), regexp.QuoteMeta(errTrailingGarbage),
}, "|") + `)$`)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "A=1", "export A=1", "# c\nA=b # c", "A='x'", `A="a\nb\"c"`,
		"A=\"multi\nline\"", "A=1\r\nB=2\r\n", "\ufeffA=1", "9=bad", "A=\"open",
		"A='open", `A="x"junk`, "novalue", "=", "A=#x", "A= #x", "\r", "\rA=1",
		"export", "export =1", `A="\`, "A=\"\\\r\n\"",
	} {
		f.Add([]byte(s), "s3cr3tV4lue")
	}
	f.Fuzz(func(t *testing.T, doc []byte, secret string) {
		vars, err := ParseBytes(doc)
		if err != nil {
			if !errShape.MatchString(err.Error()) {
				t.Fatalf("error %q is not of the fixed shape", err)
			}
			if vars != nil {
				t.Fatalf("vars %q returned with error", vars)
			}
		}
		// Put the secret behind a valid key, in each quoting form, after
		// the fuzzed document: an error must never echo it.
		if len(secret) < 4 || strings.ContainsAny(secret, "0123456789") {
			return // too short or could be mistaken for the line number
		}
		for _, form := range []string{"K=%s", "K='%s", "K=\"%s", "K='%s'x", "K=\"%s\"x", "%s"} {
			in := string(doc) + "\n" + strings.Replace(form, "%s", secret, 1)
			if _, err := ParseBytes([]byte(in)); err != nil {
				if !errShape.MatchString(err.Error()) {
					t.Fatalf("error %q is not of the fixed shape", err)
				}
				if strings.Contains(err.Error(), secret) && !strings.Contains(errShape.String(), secret) {
					t.Fatalf("error %q leaks the value %q", err, secret)
				}
			}
		}
	})
}
