package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/store"
)

const tokensHelp = `Usage: sluice tokens create|list|revoke [flags]

Manages the tokens of an edge that has a store (sluice edge --data DIR),
through its admin API.

  sluice tokens create --edge URL --admin-token A [--name laptop] [--kind agent|admin]
      creates a token; its secret is printed alone on the last line, once
  sluice tokens list --edge URL --admin-token A
  sluice tokens revoke ID --edge URL --admin-token A

--edge and --admin-token default to $SLUICE_EDGE and $SLUICE_ADMIN_TOKEN.
`

const tunnelsHelp = `Usage: sluice tunnels create|list|get|update|delete [NAME] [flags]

Manages the tunnels of an edge that has a store (sluice edge --data DIR),
through its admin API. A tunnel belongs to an agent token; a remotely
managed agent (sluice agent) serves its tunnels, each to its upstream.

  sluice tunnels create NAME --upstream http://127.0.0.1:3000 --agent-token T --edge URL --admin-token A
  sluice tunnels list --edge URL --admin-token A
  sluice tunnels get NAME --edge URL --admin-token A
  sluice tunnels update NAME --upstream http://127.0.0.1:4000 --edge URL --admin-token A
  sluice tunnels delete NAME --edge URL --admin-token A

--edge and --admin-token default to $SLUICE_EDGE and $SLUICE_ADMIN_TOKEN.
`

// apiClient calls an edge's admin API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func apiFlags(fs *flag.FlagSet) (edge, token *string) {
	edge = fs.String("edge", os.Getenv("SLUICE_EDGE"), "the edge's URL, such as https://tunnel.example.com ($SLUICE_EDGE)")
	token = fs.String("admin-token", os.Getenv("SLUICE_ADMIN_TOKEN"), "an admin token of the edge ($SLUICE_ADMIN_TOKEN)")
	return edge, token
}

func newAPIClient(cmd, edge, token string) (*apiClient, error) {
	u, err := url.Parse(edge)
	if edge == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("%s: --edge must be the edge's http:// or https:// URL", cmd)
	}
	if token == "" {
		return nil, usagef("%s: --admin-token is required", cmd)
	}
	c := httpClient()
	c.Timeout = 30 * time.Second
	return &apiClient{base: strings.TrimSuffix(edge, "/"), token: token, http: c}, nil
}

// apiError is the API's error answer.
type apiError struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}

// do sends a request with body (JSON, if not nil) and decodes the answer
// into out.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error *apiError `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != nil {
			return e.Error
		}
		return fmt.Errorf("%s %s: HTTP %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	return nil
}

// The API's JSON bodies are the store's types.
type (
	apiToken  = store.Token
	apiTunnel = store.Tunnel
)

func runTokens(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, tokensHelp)
		if len(args) == 0 {
			return usagef("tokens: want create, list or revoke")
		}
		return errHelp
	}
	sub := args[0]
	fs := newFlagSet("tokens "+sub, tokensHelp, stderr)
	edge, token := apiFlags(fs)
	name := fs.String("name", "", "create: a name to recognize the token by")
	kind := fs.String("kind", "agent", `create: "agent" (for sluice http/agent) or "admin" (for this API)`)
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	c, err := newAPIClient("tokens", *edge, *token)
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		if len(pos) != 0 {
			return usagef("tokens create: unexpected argument %q", pos[0])
		}
		var out struct {
			Token  apiToken `json:"token"`
			Secret string   `json:"secret"`
		}
		if err := c.do(ctx, "POST", "/api/tokens", map[string]string{"kind": *kind, "name": *name}, &out); err != nil {
			return fmt.Errorf("tokens create: %w", err)
		}
		fmt.Fprintf(stderr, "created %s token %s%s; its secret, shown only now:\n", out.Token.Kind, out.Token.ID, quotedName(out.Token.Name))
		fmt.Fprintln(stdout, out.Secret)
		return nil
	case "list":
		var out struct {
			Tokens []apiToken `json:"tokens"`
		}
		if err := c.do(ctx, "GET", "/api/tokens", nil, &out); err != nil {
			return fmt.Errorf("tokens list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tNAME\tCREATED\tREVOKED")
		for _, t := range out.Tokens {
			revoked := "-"
			if t.RevokedAt != nil {
				revoked = t.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Kind, t.Name, t.CreatedAt.Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	case "revoke":
		if len(pos) != 1 {
			return usagef("tokens revoke: want one token ID")
		}
		if err := c.do(ctx, "DELETE", "/api/tokens/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return fmt.Errorf("tokens revoke: %w", err)
		}
		fmt.Fprintf(stdout, "revoked %s\n", pos[0])
		return nil
	}
	return usagef("tokens: unknown subcommand %q (want create, list or revoke)", sub)
}

func quotedName(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", name)
}

func runTunnels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, tunnelsHelp)
		if len(args) == 0 {
			return usagef("tunnels: want create, list, get, update or delete")
		}
		return errHelp
	}
	sub := args[0]
	fs := newFlagSet("tunnels "+sub, tunnelsHelp, stderr)
	edge, token := apiFlags(fs)
	upstream := fs.String("upstream", "", "create/update: where the agent sends the tunnel's requests, such as http://127.0.0.1:3000")
	agentToken := fs.String("agent-token", "", "create/update: the secret of the agent token the tunnel belongs to")
	hostHeader := fs.String("host-header", "", `create/update: Host the upstream sees: "preserve", "rewrite" or a literal host`)
	authUser := fs.String("basic-auth", "", "create/update: USER:PASSWORD visitors must give (basic auth); \"\" with update clears it")
	allow := fs.String("allow", "", "create/update: comma-separated CIDRs visitors must come from, such as 10.0.0.0/8,192.168.1.0/24")
	disabled := fs.Bool("disabled", false, "create/update: the tunnel refuses visitors until enabled")
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	c, err := newAPIClient("tunnels", *edge, *token)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	body := func(name string) (map[string]any, error) {
		b := map[string]any{}
		if name != "" {
			b["name"] = name
		}
		if set["upstream"] {
			b["upstream"] = *upstream
		}
		if set["agent-token"] {
			b["agent_token"] = *agentToken
		}
		if set["host-header"] {
			b["host_header"] = *hostHeader
		}
		if set["basic-auth"] {
			user, pass, ok := strings.Cut(*authUser, ":")
			if *authUser != "" && !ok {
				return nil, usagef("tunnels: --basic-auth wants USER:PASSWORD")
			}
			b["basic_auth_user"], b["basic_auth_password"] = user, pass
		}
		if set["allow"] {
			cidrs := []string{}
			for _, c := range strings.Split(*allow, ",") {
				if c = strings.TrimSpace(c); c != "" {
					cidrs = append(cidrs, c)
				}
			}
			b["allow_cidrs"] = cidrs
		}
		if set["disabled"] {
			b["enabled"] = !*disabled
		}
		return b, nil
	}
	one := func(verb string) (string, error) {
		if len(pos) != 1 {
			return "", usagef("tunnels %s: want one tunnel NAME", verb)
		}
		return pos[0], nil
	}
	var out struct {
		Tunnel  apiTunnel   `json:"tunnel"`
		Tunnels []apiTunnel `json:"tunnels"`
	}
	switch sub {
	case "create":
		name, err := one("create")
		if err != nil {
			return err
		}
		if !set["upstream"] || !set["agent-token"] {
			return usagef("tunnels create: --upstream and --agent-token are required")
		}
		b, err := body(name)
		if err != nil {
			return err
		}
		if err := c.do(ctx, "POST", "/api/tunnels", b, &out); err != nil {
			return fmt.Errorf("tunnels create %s: %w", name, err)
		}
		printTunnel(stdout, out.Tunnel)
		return nil
	case "update":
		name, err := one("update")
		if err != nil {
			return err
		}
		b, err := body("")
		if err != nil {
			return err
		}
		if len(b) == 0 {
			return usagef("tunnels update: nothing to change (give --upstream, --agent-token, --host-header, --basic-auth, --allow or --disabled)")
		}
		if err := c.do(ctx, "PATCH", "/api/tunnels/"+url.PathEscape(name), b, &out); err != nil {
			return fmt.Errorf("tunnels update %s: %w", name, err)
		}
		printTunnel(stdout, out.Tunnel)
		return nil
	case "get":
		name, err := one("get")
		if err != nil {
			return err
		}
		if err := c.do(ctx, "GET", "/api/tunnels/"+url.PathEscape(name), nil, &out); err != nil {
			return fmt.Errorf("tunnels get %s: %w", name, err)
		}
		printTunnel(stdout, out.Tunnel)
		return nil
	case "delete":
		name, err := one("delete")
		if err != nil {
			return err
		}
		if err := c.do(ctx, "DELETE", "/api/tunnels/"+url.PathEscape(name), nil, nil); err != nil {
			return fmt.Errorf("tunnels delete %s: %w", name, err)
		}
		fmt.Fprintf(stdout, "deleted %s\n", name)
		return nil
	case "list":
		if err := c.do(ctx, "GET", "/api/tunnels", nil, &out); err != nil {
			return fmt.Errorf("tunnels list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tUPSTREAM\tAGENT TOKEN\tENABLED\tVERSION")
		for _, t := range out.Tunnels {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\n", t.Name, t.Upstream, t.AgentTokenID, t.Enabled, t.Version)
		}
		return tw.Flush()
	}
	return usagef("tunnels: unknown subcommand %q (want create, list, get, update or delete)", sub)
}

func printTunnel(w io.Writer, t apiTunnel) {
	fmt.Fprintf(w, "%s -> %s (agent token %s, enabled %v, version %d)\n", t.Name, t.Upstream, t.AgentTokenID, t.Enabled, t.Version)
	if t.BasicAuthUser != "" {
		fmt.Fprintf(w, "  basic auth: user %q\n", t.BasicAuthUser)
	}
	if len(t.AllowCIDRs) > 0 {
		fmt.Fprintf(w, "  allowed: %s\n", strings.Join(t.AllowCIDRs, ", "))
	}
}
