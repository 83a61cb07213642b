package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// ParseURL parses s as an absolute http:// or https:// URL with a host,
// the only kind the edge's URL and a push URL can be (an upstream's is
// ParseUpstream's). Its error is a *URLError naming s.
func ParseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &URLError{URL: s}
	}
	return u, nil
}

// ParseUpstream parses s as a local server's URL: http://, https:// (HTTP/2
// when the server offers it through ALPN) or h2c:// (HTTP/2 without TLS,
// with prior knowledge: what gRPC servers speak), with a host. Its error is
// a *URLError naming s.
func ParseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "h2c") || u.Host == "" {
		return nil, &URLError{URL: s, Upstream: true}
	}
	return u, nil
}

// ParseAddrUpstream parses s as the local address of a tunnel of type typ,
// "tcp" or "udp" (wire.TunnelTCP, wire.TunnelUDP): TYPE://HOST:PORT with a
// port from 1 to 65535, and returns HOST:PORT. Its error is a *URLError
// naming s.
func ParseAddrUpstream(typ, s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != typ || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", &URLError{URL: s, Addr: typ}
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 || u.Hostname() == "" {
		return "", &URLError{URL: s, Addr: typ}
	}
	return u.Host, nil
}

// maxAnswer bounds the answers the client reads.
const maxAnswer = 16 << 20

// Client calls an edge's API with one bearer token: an admin token for
// the admin endpoints, an agent token for AgentConfig and the push
// channel. Its methods are safe to call concurrently. Every error of an
// answer is an *Error.
type Client struct {
	base  string // the edge's URL, without a trailing slash
	token string
	http  *http.Client
}

// NewClient returns a client of the edge at edgeURL (see ParseURL) with
// token. hc makes the requests; nil means http.DefaultClient. The client
// sets no timeout of its own: give hc one, or the calls a context with a
// deadline.
func NewClient(edgeURL, token string, hc *http.Client) (*Client, error) {
	if _, err := ParseURL(edgeURL); err != nil {
		return nil, fmt.Errorf("api: edge %w", err)
	}
	if token == "" {
		return nil, ErrNoToken
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(edgeURL, "/"), token: token, http: hc}, nil
}

// CreateToken creates a token; its secret is in the answer only.
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (CreateTokenResponse, error) {
	var out CreateTokenResponse
	err := c.do(ctx, http.MethodPost, "/api/tokens", req, &out)
	return out, err
}

// ListTokens lists every token, revoked ones too.
func (c *Client) ListTokens(ctx context.Context) ([]Token, error) {
	var out ListTokensResponse
	err := c.do(ctx, http.MethodGet, "/api/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken revokes the token with id and returns it.
func (c *Client) RevokeToken(ctx context.Context, id string) (Token, error) {
	var out TokenResponse
	err := c.do(ctx, http.MethodDelete, "/api/tokens/"+url.PathEscape(id), nil, &out)
	return out.Token, err
}

// CreateTunnel creates a tunnel; req.Name, req.Upstream and an agent
// token are required.
func (c *Client) CreateTunnel(ctx context.Context, req TunnelRequest) (Tunnel, error) {
	var out TunnelResponse
	err := c.do(ctx, http.MethodPost, "/api/tunnels", req, &out)
	return out.Tunnel, err
}

// ListTunnels lists every tunnel.
func (c *Client) ListTunnels(ctx context.Context) ([]Tunnel, error) {
	var out ListTunnelsResponse
	err := c.do(ctx, http.MethodGet, "/api/tunnels", nil, &out)
	return out.Tunnels, err
}

// Tunnel returns the tunnel called name.
func (c *Client) Tunnel(ctx context.Context, name string) (Tunnel, error) {
	var out TunnelResponse
	err := c.do(ctx, http.MethodGet, "/api/tunnels/"+url.PathEscape(name), nil, &out)
	return out.Tunnel, err
}

// UpdateTunnel changes the fields of the tunnel called name that req sets.
func (c *Client) UpdateTunnel(ctx context.Context, name string, req TunnelRequest) (Tunnel, error) {
	var out TunnelResponse
	err := c.do(ctx, http.MethodPatch, "/api/tunnels/"+url.PathEscape(name), req, &out)
	return out.Tunnel, err
}

// DeleteTunnel deletes the tunnel called name and returns it as it was.
func (c *Client) DeleteTunnel(ctx context.Context, name string) (Tunnel, error) {
	var out TunnelResponse
	err := c.do(ctx, http.MethodDelete, "/api/tunnels/"+url.PathEscape(name), nil, &out)
	return out.Tunnel, err
}

// ListAgents lists the last registration of each token's agent.
func (c *Client) ListAgents(ctx context.Context) ([]Agent, error) {
	var out ListAgentsResponse
	err := c.do(ctx, http.MethodGet, "/api/agents", nil, &out)
	return out.Agents, err
}

// Notify sends config_changed to every connected managed agent.
func (c *Client) Notify(ctx context.Context) (NotifyResponse, error) {
	var out NotifyResponse
	err := c.do(ctx, http.MethodPost, "/api/agents/notify", nil, &out)
	return out, err
}

// AgentConfig returns the configuration of the client's agent token.
func (c *Client) AgentConfig(ctx context.Context) (AgentConfig, error) {
	var out AgentConfig
	err := c.do(ctx, http.MethodGet, "/api/agent/config", nil, &out)
	return out, err
}

// PushURL is the push channel's URL: cfg.PushURL when the edge gave a
// valid one on the client's own edge (see OnEdge), else the edge's
// /api/agent/push.
func (c *Client) PushURL(cfg AgentConfig) string {
	if c.OnEdge(cfg.PushURL) {
		return cfg.PushURL
	}
	return c.base + "/api/agent/push"
}

// OnEdge reports whether u is a valid URL (see ParseURL) with the scheme
// and host (and port) of the client's edge: the only URLs the client
// sends its token to. A push_url that names another host, whoever put it
// in the edge's answer, gets no token.
func (c *Client) OnEdge(u string) bool {
	pu, err := ParseURL(u)
	if err != nil {
		return false
	}
	base, _ := ParseURL(c.base)
	return pu.Scheme == base.Scheme && strings.EqualFold(pu.Hostname(), base.Hostname()) && port(pu) == port(base)
}

// port is u's port, or its scheme's default.
func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// NewPushRequest returns the request that opens the push channel at
// pushURL (see PushURL) with the client's token: an event stream to read
// with an SSE client, which should reconnect and fetch AgentConfig again
// after every reconnection. A pushURL that is not on the client's edge
// (see OnEdge) is refused with ErrOtherHost.
func (c *Client) NewPushRequest(ctx context.Context, pushURL string) (*http.Request, error) {
	if _, err := ParseURL(pushURL); err != nil {
		return nil, fmt.Errorf("api: push %w", err)
	}
	if !c.OnEdge(pushURL) {
		return nil, fmt.Errorf("api: push to %s: %w", pushURL, ErrOtherHost)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pushURL, nil)
	if err != nil {
		return nil, fmt.Errorf("api: push: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "text/event-stream")
	return req, nil
}

// do sends a request with body (JSON, if not nil) and decodes a success
// into out; any other answer is an *Error.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("api: %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, path, err)
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
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e ErrorResponse
		if json.Unmarshal(data, &e) == nil && e.Error != nil && e.Error.Code != "" {
			if e.Error.Status == 0 {
				e.Error.Status = resp.StatusCode
			}
			return e.Error
		}
		return &Error{Status: resp.StatusCode, Message: fmt.Sprintf("%s %s: HTTP %s: %s", method, path, resp.Status, bytes.TrimSpace(data))}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("api: %s %s: unexpected answer: %w", method, path, err)
		}
	}
	return nil
}
