package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/inspect"
)

// defaultInspect is the inspector's address when --inspect is not given.
const defaultInspect = "127.0.0.1:4040"

const replayHelp = `Usage: sluice replay ID [--inspect ADDR] [--json]

Sends a request that the inspector of a running agent (sluice http, sluice
agent, sluice demo) recorded to the local server again: the same method,
path and query, headers and body. The replay is recorded too, marked as a
replay of ID; its id, status and duration are printed.

  sluice http 3000                 # prints the public URL and the inspector's address
  curl -X POST http://demo.localhost:8080/hook -d @payload.json
  sluice replay 1                  # IDs: on the inspector's page, and in GET /api/requests

A request whose body was larger than the capture limit
(--inspect-body-limit of the agent, 1 MiB by default) cannot be replayed
as it was; the page can replay it with an edited body. To change the
method, path, headers or body first, use the page, or POST them to the
inspector's /api/requests/ID/replay as JSON: {"method": "PUT", "path":
"/x?y=1", "headers": {"Name": ["value"]}, "body": "text"} (or
"body_base64"); fields left out keep the recorded ones.
`

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("replay", replayHelp, stderr)
	addr := fs.String("inspect", defaultInspect, "the inspector's `ADDR`ess (HOST:PORT, as the agent's --inspect printed it, or its http:// URL)")
	asJSON := fs.Bool("json", false, "print the new request's object as the inspector's API gives it (GET /api/requests/ID)")
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] == "" {
		fs.Usage()
		return cli.Usagef("replay: want one request ID, got %d arguments", len(pos))
	}
	base, err := inspectorURL(*addr)
	if err != nil {
		return cli.Usagef("replay: --inspect %q: %v", *addr, err)
	}
	id := pos[0]

	hc := httpClient(nil)
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/requests/"+url.PathEscape(id)+"/replay", nil)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("replay: %w", ctx.Err())
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("replay: no inspector at %s: is sluice http running? (%v)", *addr, op.Err)
		}
		return fmt.Errorf("replay: the inspector at %s: %w", *addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("replay: reading the inspector's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Error != nil && e.Error.Code != "" {
			return fmt.Errorf("replay: %w", e.Error)
		}
		return fmt.Errorf("replay: %s answered %s: is it a sluice inspector?", *addr, resp.Status)
	}
	var r inspect.Request
	if err := json.Unmarshal(body, &r); err != nil || r.ID == "" {
		return fmt.Errorf("replay: %s answered %s with no request: is it a sluice inspector?", *addr, resp.Status)
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	_, err = fmt.Fprintln(stdout, replayLine(id, &r))
	return err
}

// replayLine is what sluice replay prints: the new request's id, status
// and duration.
func replayLine(of string, r *inspect.Request) string {
	var outcome string
	switch {
	case r.State == inspect.StateFailed:
		outcome = "failed: " + r.Error
		if r.Status != 0 {
			outcome = fmt.Sprintf("%d %s, then failed: %s", r.Status, http.StatusText(r.Status), r.Error)
		}
	case r.State == inspect.StateDone:
		outcome = fmt.Sprintf("%d %s in %s", r.Status, http.StatusText(r.Status), durationMS(r.DurationMS))
	default: // a stream: it goes on
		outcome = fmt.Sprintf("%d %s after %s, still %s (see the inspector)", r.Status, http.StatusText(r.Status), durationMS(r.DurationMS), r.State)
	}
	return fmt.Sprintf("Replayed request %s as request %s: %s %s -> %s", of, r.ID, r.Method, r.Path, outcome)
}

func durationMS(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%.2f s", ms/1000)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

// inspectorURL is the base URL of the inspector at addr: HOST:PORT or an
// http:// URL.
func inspectorURL(addr string) (string, error) {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return "", errors.New("want HOST:PORT or an http:// URL")
		}
		return strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/"), nil
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return "", errors.New("want HOST:PORT, such as 127.0.0.1:4040")
	}
	return "http://" + addr, nil
}
