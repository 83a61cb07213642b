package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/wire"
)

// "sluice tokens" and "sluice tunnels": clients of an edge's admin API
// (package api). Each verb has a flag set of its own, so a flag a verb does
// not take is a usage error; the flags every verb takes (--edge,
// --admin-token) are declared once, by adminFlags.

const tokensHelp = `Usage: sluice tokens create|list|revoke [flags]

Manages the tokens of an edge that has a store (sluice edge --data DIR),
through its admin API.

  sluice tokens create --edge URL --admin-token A [--name laptop] [--kind agent|admin]
      creates a token; its secret is printed alone on the last line, once
  sluice tokens list --edge URL --admin-token A
  sluice tokens revoke ID --edge URL --admin-token A

--edge and --admin-token default to $SLUICE_EDGE and $SLUICE_ADMIN_TOKEN;
--admin-token-file FILE reads the token from a file instead; --ca FILE
trusts a private CA for an https:// edge.
`

const tunnelsHelp = `Usage: sluice tunnels create|list|get|update|delete [NAME] [flags]

Manages the tunnels of an edge that has a store (sluice edge --data DIR),
through its admin API. A tunnel belongs to an agent token; a remotely
managed agent (sluice agent) serves its tunnels, each to its upstream.

  sluice tunnels create NAME --upstream http://127.0.0.1:3000 --agent-token T --edge URL --admin-token A
      [--hostname app.example.com ...]   custom hostnames the edge also serves NAME at
  sluice tunnels create NAME --type tcp --upstream tcp://127.0.0.1:5432 [--remote-port N] --agent-token T ...
      a TCP tunnel: public port N of the edge (default: one of its --tcp-ports range)
  sluice tunnels create NAME --type udp --upstream udp://127.0.0.1:53 [--remote-port N] --agent-token T ...
      a UDP tunnel: public UDP port N of the edge (default: one of its --udp-ports range)
  sluice tunnels list --edge URL --admin-token A
  sluice tunnels get NAME --edge URL --admin-token A
  sluice tunnels update NAME --upstream http://127.0.0.1:4000 --edge URL --admin-token A
  sluice tunnels update NAME --hostname app.example.com --hostname www.example.com ...
      replaces the custom hostnames; --hostname "" clears them
  sluice tunnels delete NAME --edge URL --admin-token A

--edge and --admin-token default to $SLUICE_EDGE and $SLUICE_ADMIN_TOKEN;
--admin-token-file FILE reads the token from a file instead; --ca FILE
trusts a private CA for an https:// edge.
`

// adminGroup is a command made of verbs, each with its own flag set.
type adminGroup struct {
	name  string // "tokens"
	help  string // the command's help, before the flags of its verbs
	verbs []adminVerb
}

// adminVerb is a verb of an adminGroup.
type adminVerb struct {
	name  string // "create"
	args  string // its arguments, for its usage line: "NAME [flags]"
	about string // what it does
	// flags declares the verb's own flags on fs and returns the function
	// that runs it with the arguments that are not flags.
	flags func(fs *flag.FlagSet) func(ctx context.Context, c *api.Client, pos []string, stdout, stderr io.Writer) error
}

// adminFlags are the flags every verb takes.
type adminFlags struct {
	fs    *flag.FlagSet
	edge  string
	token *cli.Secret
	ca    func() (string, *tls.Config, error)
	hc    *http.Client // made by client
}

func addAdminFlags(fs *flag.FlagSet) *adminFlags {
	a := &adminFlags{fs: fs}
	fs.StringVar(&a.edge, "edge", "", "the edge's URL, such as https://tunnel.example.com (default $SLUICE_EDGE)")
	a.token = cli.SecretFlag(fs, "admin-token", "SLUICE_ADMIN_TOKEN", "an admin token of the edge")
	a.ca = caFlag(fs)
	return a
}

// client returns the API client the flags (or their variables) name, or
// a usage error.
func (a *adminFlags) client(cmd string) (*api.Client, error) {
	set := map[string]bool{}
	a.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["edge"] {
		a.edge = os.Getenv("SLUICE_EDGE")
	}
	token, _, err := a.token.Value()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	if _, err := api.ParseURL(a.edge); err != nil {
		return nil, cli.Usagef("%s: --edge must be the edge's http:// or https:// URL", cmd)
	}
	if token == "" {
		return nil, cli.Usagef("%s: --admin-token is required", cmd)
	}
	_, tc, err := a.ca()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	a.hc = httpClient(tc)
	a.hc.Timeout = 30 * time.Second
	return api.NewClient(a.edge, token, a.hc)
}

// verbFlags returns v's flag set, with the shared flags, the function that
// runs v and the shared flags' values.
func (g *adminGroup) verbFlags(v adminVerb, stderr io.Writer) (*flag.FlagSet, func(context.Context, *api.Client, []string, io.Writer, io.Writer) error, *adminFlags) {
	help := fmt.Sprintf("Usage: sluice %s %s %s\n\n%s\n", g.name, v.name, v.args, v.about)
	fs := cli.NewFlagSet(g.name+" "+v.name, help, stderr)
	run := v.flags(fs)
	return fs, run, addAdminFlags(fs)
}

// usage prints the command's help and the flags of each verb; verbs with
// the same flags are listed together.
func (g *adminGroup) usage(w io.Writer) {
	fmt.Fprint(w, g.help)
	var order []string
	names := map[string][]string{} // flag listing -> verbs
	for _, v := range g.verbs {
		fs := flag.NewFlagSet(v.name, flag.ContinueOnError)
		v.flags(fs)
		var b strings.Builder
		fs.SetOutput(&b)
		fs.PrintDefaults()
		if b.Len() == 0 {
			continue
		}
		if names[b.String()] == nil {
			order = append(order, b.String())
		}
		names[b.String()] = append(names[b.String()], v.name)
	}
	for _, listing := range order {
		fmt.Fprintf(w, "\nFlags of %s:\n%s", joinAnd(names[listing]), listing)
	}
	fs := flag.NewFlagSet(g.name, flag.ContinueOnError)
	addAdminFlags(fs)
	fs.SetOutput(w)
	fmt.Fprintln(w, "\nFlags of every verb:")
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nRun \"sluice %s VERB --help\" for a verb's usage.\n", g.name)
}

// joinAnd joins "a", "b" and "c" as "a, b and c".
func joinAnd(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// verbList is "create, list or revoke".
func (g *adminGroup) verbList() string {
	var names []string
	for _, v := range g.verbs {
		names = append(names, v.name)
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// run runs the verb args[0] with the rest of args.
func (g *adminGroup) run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" {
		g.usage(stderr)
		if len(args) == 0 {
			return cli.Usagef("%s: want %s", g.name, g.verbList())
		}
		return cli.ErrHelp
	}
	i := -1
	for j, v := range g.verbs {
		if v.name == args[0] {
			i = j
		}
	}
	if i < 0 {
		return cli.Usagef("%s: unknown subcommand %q (want %s)", g.name, args[0], g.verbList())
	}
	fs, run, shared := g.verbFlags(g.verbs[i], stderr)
	pos, err := cli.ParseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	c, err := shared.client(g.name)
	if err != nil {
		return err
	}
	defer shared.hc.CloseIdleConnections()
	return run(ctx, c, pos, stdout, stderr)
}

var tokensCmd = &adminGroup{name: "tokens", help: tokensHelp, verbs: []adminVerb{
	{name: "create", args: "[flags]", about: "Creates a token; its secret is printed alone on the last line, once.", flags: tokensCreate},
	{name: "list", args: "[flags]", about: "Lists the tokens, revoked ones too.", flags: tokensList},
	{name: "revoke", args: "ID [flags]", about: "Revokes the token ID: its tunnels go offline and its managed agent stops.", flags: tokensRevoke},
}}

func runTokens(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return tokensCmd.run(ctx, args, stdout, stderr)
}

type adminRun = func(ctx context.Context, c *api.Client, pos []string, stdout, stderr io.Writer) error

func tokensCreate(fs *flag.FlagSet) adminRun {
	name := fs.String("name", "", "a name to recognize the token by")
	kind := fs.String("kind", api.KindAgent, `"agent" (for sluice http/agent) or "admin" (for this API)`)
	return func(ctx context.Context, c *api.Client, pos []string, stdout, stderr io.Writer) error {
		if len(pos) != 0 {
			return cli.Usagef("tokens create: unexpected argument %q", pos[0])
		}
		out, err := c.CreateToken(ctx, api.CreateTokenRequest{Kind: *kind, Name: *name})
		if err != nil {
			return fmt.Errorf("tokens create: %w", err)
		}
		fmt.Fprintf(stderr, "created %s token %s%s; its secret, shown only now:\n", out.Token.Kind, out.Token.ID, quotedName(out.Token.Name))
		fmt.Fprintln(stdout, out.Secret)
		return nil
	}
}

func tokensList(*flag.FlagSet) adminRun {
	return func(ctx context.Context, c *api.Client, _ []string, stdout, _ io.Writer) error {
		list, err := c.ListTokens(ctx)
		if err != nil {
			return fmt.Errorf("tokens list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tNAME\tCREATED\tREVOKED")
		for _, t := range list {
			revoked := "-"
			if t.RevokedAt != nil {
				revoked = t.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Kind, t.Name, t.CreatedAt.Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	}
}

func tokensRevoke(*flag.FlagSet) adminRun {
	return func(ctx context.Context, c *api.Client, pos []string, stdout, _ io.Writer) error {
		if len(pos) != 1 {
			return cli.Usagef("tokens revoke: want one token ID")
		}
		if _, err := c.RevokeToken(ctx, pos[0]); err != nil {
			return fmt.Errorf("tokens revoke: %w", err)
		}
		fmt.Fprintf(stdout, "revoked %s\n", pos[0])
		return nil
	}
}

func quotedName(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", name)
}

var tunnelsCmd = &adminGroup{name: "tunnels", help: tunnelsHelp, verbs: []adminVerb{
	{name: "create", args: "NAME --upstream URL --agent-token T [flags]", about: "Creates the tunnel NAME (a DNS label), served by the managed agent of the agent token T.", flags: tunnelsCreate},
	{name: "list", args: "[flags]", about: "Lists the tunnels.", flags: tunnelsList},
	{name: "get", args: "NAME [flags]", about: "Shows the tunnel NAME.", flags: tunnelsGet},
	{name: "update", args: "NAME [flags]", about: "Changes what the flags given set, and nothing else, of the tunnel NAME.", flags: tunnelsUpdate},
	{name: "delete", args: "NAME [flags]", about: "Deletes the tunnel NAME: its agent stops serving it.", flags: tunnelsDelete},
}}

func runTunnels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return tunnelsCmd.run(ctx, args, stdout, stderr)
}

// tunnelFlags declares the flags of tunnels create and update and returns
// the function that makes the request of those given.
func tunnelFlags(fs *flag.FlagSet) func(name string) (api.TunnelRequest, error) {
	upstream := fs.String("upstream", "", "where the agent sends the tunnel's requests, such as http://127.0.0.1:3000 (tcp://127.0.0.1:5432 with --type tcp, udp://127.0.0.1:53 with --type udp)")
	typ := fs.String("type", "", `the tunnel's type: "http", "tcp" or "udp" (default http; update leaves it)`)
	remotePort := fs.Int("remote-port", 0, "a tcp or udp tunnel's public `PORT` at the edge, in its --tcp-ports range (--udp-ports for udp; TCP and UDP ports are apart) (default 0: any of the range)")
	agentToken := fs.String("agent-token", "", "the secret of the agent token the tunnel belongs to")
	hostHeader := fs.String("host-header", "", `Host the upstream sees: "preserve", "rewrite" or a literal host`)
	authUser := fs.String("basic-auth", "", `USER:PASSWORD visitors must give (basic auth); "" with update clears it`)
	allow := fs.String("allow", "", `comma-separated CIDRs visitors must come from, such as 10.0.0.0/8,192.168.1.0/24; "" with update clears them`)
	disabled := fs.Bool("disabled", false, "the tunnel refuses visitors until enabled (update --disabled=false enables it)")
	var hostnames hostnameList
	fs.Var(&hostnames, "hostname", `a custom hostname `+"`HOST`"+` the edge also serves the tunnel at, such as app.example.com (a DNS name outside the edge's domain, pointing at the edge; one tunnel's at most), repeatable; with update the list given replaces the tunnel's, and --hostname "" clears it (default: none, and update leaves them)`)
	return func(name string) (api.TunnelRequest, error) {
		var req api.TunnelRequest
		if name != "" {
			req.Name = &name
		}
		var err error
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "upstream":
				req.Upstream = upstream
			case "type":
				req.Type = typ
			case "remote-port":
				req.RemotePort = remotePort
			case "agent-token":
				req.AgentToken = agentToken
			case "host-header":
				req.HostHeader = hostHeader
			case "basic-auth":
				user, pass, ok := strings.Cut(*authUser, ":")
				if *authUser != "" && !ok {
					err = cli.Usagef("tunnels: --basic-auth wants USER:PASSWORD")
				}
				req.BasicAuthUser, req.BasicAuthPassword = &user, &pass
			case "allow":
				cidrs := cidrList(*allow)
				req.AllowCIDRs = &cidrs
			case "disabled":
				enabled := !*disabled
				req.Enabled = &enabled
			case "hostname":
				hs := []string(hostnames)
				req.Hostnames = &hs
			}
		})
		return req, err
	}
}

// hostnameList is the value of the repeatable --hostname: the hostnames
// given, in order, without the empty ones ("" alone clears the list).
type hostnameList []string

func (l *hostnameList) String() string { return strings.Join(*l, ", ") }

func (l *hostnameList) Set(s string) error {
	if s = strings.TrimSpace(s); s != "" {
		*l = append(*l, s)
	} else if *l == nil {
		*l = []string{}
	}
	return nil
}

// oneName is the NAME of a verb that wants one.
func oneName(verb string, pos []string) (string, error) {
	if len(pos) != 1 {
		return "", cli.Usagef("tunnels %s: want one tunnel NAME", verb)
	}
	return pos[0], nil
}

func tunnelsCreate(fs *flag.FlagSet) adminRun {
	request := tunnelFlags(fs)
	return func(ctx context.Context, c *api.Client, pos []string, stdout, _ io.Writer) error {
		name, err := oneName("create", pos)
		if err != nil {
			return err
		}
		req, err := request(name)
		if err != nil {
			return err
		}
		if req.Upstream == nil || req.AgentToken == nil {
			return cli.Usagef("tunnels create: --upstream and --agent-token are required")
		}
		t, err := c.CreateTunnel(ctx, req)
		if err != nil {
			return fmt.Errorf("tunnels create %s: %w", name, err)
		}
		printTunnel(stdout, t)
		return nil
	}
}

func tunnelsUpdate(fs *flag.FlagSet) adminRun {
	request := tunnelFlags(fs)
	return func(ctx context.Context, c *api.Client, pos []string, stdout, _ io.Writer) error {
		name, err := oneName("update", pos)
		if err != nil {
			return err
		}
		req, err := request("")
		if err != nil {
			return err
		}
		if reflect.ValueOf(req).IsZero() {
			return cli.Usagef("tunnels update: nothing to change (give --type, --upstream, --remote-port, --agent-token, --host-header, --basic-auth, --allow, --hostname or --disabled)")
		}
		t, err := c.UpdateTunnel(ctx, name, req)
		if err != nil {
			return fmt.Errorf("tunnels update %s: %w", name, err)
		}
		printTunnel(stdout, t)
		return nil
	}
}

func tunnelsGet(*flag.FlagSet) adminRun {
	return func(ctx context.Context, c *api.Client, pos []string, stdout, _ io.Writer) error {
		name, err := oneName("get", pos)
		if err != nil {
			return err
		}
		t, err := c.Tunnel(ctx, name)
		if err != nil {
			return fmt.Errorf("tunnels get %s: %w", name, err)
		}
		printTunnel(stdout, t)
		return nil
	}
}

func tunnelsDelete(*flag.FlagSet) adminRun {
	return func(ctx context.Context, c *api.Client, pos []string, stdout, _ io.Writer) error {
		name, err := oneName("delete", pos)
		if err != nil {
			return err
		}
		if _, err := c.DeleteTunnel(ctx, name); err != nil {
			return fmt.Errorf("tunnels delete %s: %w", name, err)
		}
		fmt.Fprintf(stdout, "deleted %s\n", name)
		return nil
	}
}

func tunnelsList(*flag.FlagSet) adminRun {
	return func(ctx context.Context, c *api.Client, _ []string, stdout, _ io.Writer) error {
		list, err := c.ListTunnels(ctx)
		if err != nil {
			return fmt.Errorf("tunnels list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tUPSTREAM\tAGENT TOKEN\tENABLED\tVERSION\tHOSTNAMES\tTYPE")
		for _, t := range list {
			hostnames := "-"
			if len(t.Hostnames) > 0 {
				hostnames = strings.Join(t.Hostnames, ",")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%s\t%s\n", t.Name, t.Upstream, t.AgentTokenID, t.Enabled, t.Version, hostnames, cmp.Or(t.Type, wire.TunnelHTTP))
		}
		return tw.Flush()
	}
}

func printTunnel(w io.Writer, t api.Tunnel) {
	fmt.Fprintf(w, "%s -> %s (agent token %s, enabled %v, version %d)\n", t.Name, t.Upstream, t.AgentTokenID, t.Enabled, t.Version)
	if t.Type == wire.TunnelTCP || t.Type == wire.TunnelUDP {
		port := "any of the edge's range"
		if t.RemotePort != 0 {
			port = strconv.Itoa(t.RemotePort)
		}
		fmt.Fprintf(w, "  type: %s, remote port %s\n", t.Type, port)
	}
	if t.BasicAuthUser != "" {
		fmt.Fprintf(w, "  basic auth: user %q\n", t.BasicAuthUser)
	}
	if len(t.AllowCIDRs) > 0 {
		fmt.Fprintf(w, "  allowed: %s\n", strings.Join(t.AllowCIDRs, ", "))
	}
	if len(t.Hostnames) > 0 {
		fmt.Fprintf(w, "  hostnames: %s\n", strings.Join(t.Hostnames, ", "))
	}
}
