package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/internal/cli"
)

const loginHelp = `Usage: sluice login --edge URL --token T [flags]

Stores the edge's URL, an agent token for it and the CA that signed its
certificate (--ca) in the config file, $XDG_CONFIG_HOME/sluice/config.json
(by default ~/.config/sluice/config.json; mode 0600, in a directory with
mode 0700), so that "sluice http" and "sluice agent" need neither --edge
nor --token, and the token is not in ps. The tunnels the file lists, if
any, are kept ("sluice start"). Give the token with --token-file or
$SLUICE_TOKEN rather than --token, for the same reason.

  sluice login --edge https://tunnel.example.com --token-file ./token
  sluice login --edge https://tunnel.example.com --ca ./edge-ca.pem --token-file ./token
  sluice http 3000

Before storing them, it checks that the edge answers (GET /healthz) and,
on an edge with a store, that it accepts the token (GET /api/agent/config);
an edge without a store checks tokens only when agents connect.
`

func runLogin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("login", loginHelp, stderr)
	edgeURL := fs.String("edge", "", "the edge's URL, such as https://tunnel.example.com (required)")
	tokenFlag := cli.SecretFlag(fs, "token", "SLUICE_TOKEN", "the agent token to store (required)")
	ca := caFlag(fs)
	config := configFlag(fs)
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("login: unexpected argument %q", pos[0])
	}
	token, from, err := tokenFlag.Value()
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if _, err := api.ParseURL(*edgeURL); err != nil || token == "" {
		fs.Usage()
		return cli.Usagef("login: --edge (an http:// or https:// URL) and --token (or --token-file, or $SLUICE_TOKEN) are required")
	}
	caPath, tc, err := ca()
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if caPath != "" {
		if caPath, err = filepath.Abs(caPath); err != nil {
			return fmt.Errorf("login: --ca: %w", err)
		}
	}
	path, _, err := config()
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	cli.WarnWeak(stderr, from, token)

	hc := httpClient(tc)
	hc.Timeout = 30 * time.Second
	defer hc.CloseIdleConnections()
	if err := checkHealth(ctx, hc, *edgeURL); err != nil {
		return err
	}
	c, err := api.NewClient(*edgeURL, token, hc)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	var ae *api.Error
	switch cfg, err := c.AgentConfig(ctx); {
	case err == nil:
		fmt.Fprintf(stderr, "the edge accepts the token (%d stored tunnels)\n", len(cfg.Tunnels))
	case errors.As(err, &ae) && ae.Code == api.CodeNoStore:
		fmt.Fprintln(stderr, "the edge has no store: it checks the token when an agent connects")
	case errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden):
		return fmt.Errorf("login: the edge refused the token: %s; nothing stored", ae.Message)
	default:
		fmt.Fprintf(stderr, "sluice: warning: the token could not be checked: %v\n", err)
	}

	uc, err := loadConfig(path, false) // login makes the file
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	uc.Edge, uc.Token, uc.CA = *edgeURL, token, caPath
	if err := uc.save(path); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	fmt.Fprintf(stdout, "Stored the edge %s and its token in %s\n", *edgeURL, path)
	return nil
}

// checkHealth checks that the edge at edgeURL answers GET /healthz.
func checkHealth(ctx context.Context, hc *http.Client, edgeURL string) error {
	u := strings.TrimSuffix(edgeURL, "/") + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		if agent.IsCertError(err) {
			return fmt.Errorf("login: %w", &agent.CertError{Edge: edgeURL, Attempts: 1, Err: err})
		}
		return fmt.Errorf("login: the edge does not answer: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("login: %s answered %s: is it a sluice edge?", u, resp.Status)
	}
	return nil
}
