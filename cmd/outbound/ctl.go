package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/outbound-dev/outbound/proxy/control/client"
)

// runtimeMethods are the per-instance methods of the spec.
var runtimeMethods = []string{
	"setOutboundHandler", "setOutboundByHost", "setOutboundByHosts", "removeOutboundByHost",
	"setAllowedHosts", "setDeniedHosts", "allowHost", "denyHost", "removeAllowedHost", "removeDeniedHost",
}

const ctlUsage = `ctl [--admin URL] [--admin-token T] VERB ...

Verbs:
  status                          server status
  list                            every instance
  create ID [--class C]           create an instance (prints proxy_url and ca_pem once);
         [--source CIDR]...       --source: client range serve --transparent attributes to it
  show ID                         one instance
  delete ID                       delete an instance
  METHOD ID [ARG...]              a runtime method; each ARG is JSON, or a bare string
                                  (` + "setOutboundHandler, setOutboundByHost, setOutboundByHosts, removeOutboundByHost,\n                                  setAllowedHosts, setDeniedHosts, allowHost, denyHost, removeAllowedHost, removeDeniedHost)" + `
  kv put BINDING KEY VALUE        store a value (VALUE - reads stdin)
  kv get BINDING KEY              print a value
  kv delete BINDING KEY           delete a key
  har ID                          the instance's recent traffic as HAR 1.2
  tail [ID] [--json]              follow decisions, console lines and reloads as they
                                  happen, one line each (--json: one JSON object each)
  explain ID URL                  how a request to URL would be decided for the instance:
                                  {step, handler, blocked, reason}; runs no handler, dials nothing`

func cmdCtl(args []string, stdout, stderr io.Writer) int {
	var admin, token string
	fs := newFlags("ctl", ctlUsage,
		`outbound ctl setOutboundHandler sbx-1 allowHosts '{"allowedHostnames":["github.com"]}'`, stdout)
	fs.StringVar(&admin, "admin", "127.0.0.1:3129", "control API `URL`")
	fs.StringVar(&token, "admin-token", os.Getenv("OUTBOUND_ADMIN_TOKEN"), "control API bearer `TOKEN` (also OUTBOUND_ADMIN_TOKEN)")
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return fail(stderr, "ctl", 2, "no verb given (see 'outbound ctl --help')")
	}
	c := client.New(admin, token)
	if rest[0] == "tail" {
		return ctlTail(c, rest[1:], stdout, stderr)
	}
	ctx := context.Background()
	out, code, err := ctlVerb(ctx, c, rest[0], rest[1:], os.Stdin)
	if err != nil {
		return fail(stderr, "ctl", code, "%v", err)
	}
	stdout.Write(out)
	return 0
}

// ctlVerb runs one verb. It returns what to print, or the exit code and error.
func ctlVerb(ctx context.Context, c *client.Client, verb string, args []string, stdin io.Reader) ([]byte, int, error) {
	need := func(n int, form string) error {
		if len(args) != n {
			return fmt.Errorf("usage: outbound ctl %s", form)
		}
		return nil
	}
	var raw []byte
	var err error
	switch {
	case verb == "status":
		if err := need(0, "status"); err != nil {
			return nil, 2, err
		}
		raw, err = c.Status(ctx)
	case verb == "list":
		if err := need(0, "list"); err != nil {
			return nil, 2, err
		}
		raw, err = c.List(ctx)
	case verb == "create":
		fs := flag.NewFlagSet("create", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		class := fs.String("class", "", "")
		var sources listFlag
		fs.Var(&sources, "source", "")
		// The id may come before, between or after the flags.
		pos, perr := interspersed(fs, args)
		if perr != nil || len(pos) > 1 {
			return nil, 2, errors.New("usage: outbound ctl create [ID] [--class C] [--source CIDR ...]")
		}
		id := "" // generated
		if len(pos) == 1 {
			id = pos[0]
		}
		created, cerr := c.Create(ctx, id, *class, sources...)
		if cerr != nil {
			return nil, 1, cerr
		}
		raw, err = json.Marshal(created)
	case verb == "show":
		if err := need(1, "show ID"); err != nil {
			return nil, 2, err
		}
		raw, err = c.Get(ctx, args[0])
	case verb == "delete":
		if err := need(1, "delete ID"); err != nil {
			return nil, 2, err
		}
		return nil, 1, c.Delete(ctx, args[0])
	case verb == "har":
		if err := need(1, "har ID"); err != nil {
			return nil, 2, err
		}
		raw, err = c.HAR(ctx, args[0])
	case verb == "kv":
		return ctlKV(ctx, c, args, stdin)
	case verb == "explain":
		if err := need(2, "explain ID URL"); err != nil {
			return nil, 2, err
		}
		raw, err = c.Explain(ctx, args[0], args[1])
	case slices.Contains(runtimeMethods, verb):
		if len(args) < 1 {
			return nil, 2, fmt.Errorf("usage: outbound ctl %s ID [ARG...]", verb)
		}
		raw, err = c.Call(ctx, args[0], verb, methodArgs(args[1:]))
	default:
		return nil, 2, fmt.Errorf("unknown verb %q (see 'outbound ctl --help')", verb)
	}
	if err != nil {
		return nil, 1, err
	}
	return pretty(raw), 0, nil
}

// methodArgs reads each argument as JSON, or as a string when it is not JSON,
// so `allowHosts` needs no quotes but `{"a":1}` and `["x"]` keep their shape.
func methodArgs(args []string) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(args))
	for _, a := range args {
		if json.Valid([]byte(a)) {
			out = append(out, json.RawMessage(a))
			continue
		}
		b, _ := json.Marshal(a)
		out = append(out, b)
	}
	return out
}

func ctlKV(ctx context.Context, c *client.Client, args []string, stdin io.Reader) ([]byte, int, error) {
	if len(args) < 3 {
		return nil, 2, fmt.Errorf("usage: outbound ctl kv put|get|delete BINDING KEY [VALUE]")
	}
	op, binding, key := args[0], args[1], args[2]
	switch {
	case op == "put" && len(args) == 4:
		val := []byte(args[3])
		if args[3] == "-" {
			var err error
			if val, err = io.ReadAll(stdin); err != nil {
				return nil, 1, err
			}
		}
		return nil, 1, c.KVPut(ctx, binding, key, val)
	case op == "get" && len(args) == 3:
		v, err := c.KVGet(ctx, binding, key)
		return v, 1, err
	case op == "delete" && len(args) == 3:
		return nil, 1, c.KVDelete(ctx, binding, key)
	}
	return nil, 2, fmt.Errorf("usage: outbound ctl kv put BINDING KEY VALUE | get BINDING KEY | delete BINDING KEY")
}

func pretty(raw []byte) []byte {
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		return raw
	}
	b.WriteByte('\n')
	return b.Bytes()
}
