package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/handlers/chain"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "check FILE", "outbound check examples/cloudflare-class.ts", stdout)
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		return fail(stderr, "check", 2, "want exactly one script file")
	}
	prog, err := engine.Load(context.Background(), fs.Arg(0), engine.LoadOptions{})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	info := prog.Info()
	if _, err := chain.CompileScript(info.Classes); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Arg(0), err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", fs.Arg(0))
	for _, c := range info.Classes {
		fmt.Fprintf(stdout, "class %s\n", c.Name)
		fmt.Fprintf(stdout, "  enableInternet: %v\n  interceptHttps: %v\n", c.EnableInternet, c.InterceptHTTPS)
		fmt.Fprintf(stdout, "  allowedHosts: %s\n  deniedHosts: %s\n", hostList(c.AllowedHosts), hostList(c.DeniedHosts))
		fmt.Fprintf(stdout, "  outboundByHost: %s\n", orNone(c.ByHostKeys))
		fmt.Fprintf(stdout, "  outboundHandlers: %s\n", orNone(c.Handlers))
		fmt.Fprintf(stdout, "  outbound: %v\n", c.HasOutbound)
		fmt.Fprintf(stdout, "  blocked: %v\n", c.HasBlocked)
	}
	return 0
}

func hostList(l []string) string {
	if l == nil {
		return "(unset)"
	}
	return "[" + strings.Join(l, ", ") + "]"
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "(none)"
	}
	return strings.Join(l, ", ")
}
