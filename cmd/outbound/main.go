// Command outbound is the CLI: flag parsing and wiring of the packages that
// do the work. Each subcommand lives in its own file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/outbound-dev/outbound/proxy/jail"
)

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "run the proxy and its control API", cmdServe},
		{"run", "run a command behind the proxy", cmdRun},
		{"env", "print the environment for a process or container", cmdEnv},
		{"ca", "print an instance's CA certificate", cmdCA},
		{"check", "compile a policy script and list its classes", cmdCheck},
		{"test", "run handler tests (*.test.js, *.test.ts) against a policy script", cmdTest},
		{"ctl", "a client of the control API", cmdCtl},
		{"demo", "a self-contained demo: proxy, handler and a local upstream", cmdDemo},
		{"version", "print the version, commit and Go toolchain", cmdVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "outbound: zero-trust egress for sandboxes, with Worker-style handlers")
	fmt.Fprintln(w, "\nUsage: outbound COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-7s  %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'outbound COMMAND --help' for a command's flags and an example,\n'outbound --version' for the version.")
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return 0
	case "--version", "-version":
		return cmdVersion(args[1:], stdout, stderr)
	}
	switch args[0] { // hidden helpers, started by outbound itself
	case "demo-child": // the child side of `outbound demo`
		return cmdDemoChild(args[1:], stdout, stderr)
	case jail.ChildVerb: // the jail's side of `outbound run --jail`
		return jail.ChildMain(args[1:], stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "outbound: unknown command %q (see 'outbound --help')\n", args[0])
	return 2
}

// newFlags makes a FlagSet whose --help prints the usage line, the flags and
// an example to stdout.
func newFlags(name, usageLine, example string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: outbound %s\n\nFlags:\n", usageLine)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		fmt.Fprintf(stdout, "\nExample:\n  %s\n", example)
	}
	return fs
}

// parse parses flags; it returns -1 to go on, or the exit code.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	return parsed(fs, fs.Parse(args), stderr)
}

// interspersed parses fs's flags wherever they stand among args, and
// returns the other arguments in their order.
func interspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
}

// parsed is parse's answer to fs's parse error: -1 to go on, or the exit
// code.
func parsed(fs *flag.FlagSet, err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) { // Parse has printed the usage
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "outbound %s: %v\n", fs.Name(), err)
		return 2
	}
	return -1
}

// fail prints a one-line error and returns the exit status.
func fail(stderr io.Writer, cmd string, code int, format string, args ...any) int {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(stderr, "outbound %s: %s\n", cmd, strings.ReplaceAll(msg, "\n", " "))
	return code
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
