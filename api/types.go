package api

import "time"

// Token kinds.
const (
	KindAgent = "agent" // for sluice http and sluice agent
	KindAdmin = "admin" // for this API
)

// Token is a credential as the API shows it, without its secret.
type Token struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"` // KindAgent or KindAdmin
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Tunnel is a stored tunnel as the API shows it. A visitor password is
// never shown, not even hashed.
type Tunnel struct {
	Name         string `json:"name"`
	AgentTokenID string `json:"agent_token_id"`
	// Type is wire.TunnelHTTP, wire.TunnelTCP or wire.TunnelUDP.
	Type string `json:"type"`
	// Upstream is where the managed agent sends the tunnel's requests,
	// such as http://127.0.0.1:3000 (tcp://127.0.0.1:5432 for a tcp
	// tunnel, udp://127.0.0.1:53 for a udp one: see ParseAddrUpstream).
	Upstream string `json:"upstream"`
	// RemotePort is a tcp or udp tunnel's public port at the edge; 0
	// (left out) for one from the edge's --tcp-ports (--udp-ports) range.
	// TCP and UDP ports are apart: a tcp and a udp tunnel may have the
	// same number.
	RemotePort int `json:"remote_port,omitempty"`
	// HostHeader is the agent's Host rewrite: "", "preserve", "rewrite" or
	// a literal host.
	HostHeader    string   `json:"host_header,omitempty"`
	BasicAuthUser string   `json:"basic_auth_user,omitempty"`
	AllowCIDRs    []string `json:"allow_cidrs,omitempty"`
	// Hostnames are the tunnel's custom hostnames, sorted: the edge
	// serves the tunnel at each, besides NAME.DOMAIN.
	Hostnames []string  `json:"hostnames,omitempty"`
	Enabled   bool      `json:"enabled"`
	Version   int64     `json:"version"` // incremented by each update
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Agent is what the edge last saw of an agent token's connection.
type Agent struct {
	TokenID  string    `json:"token_id"`
	Version  string    `json:"version"` // from its User-Agent, sluice/VERSION
	LastSeen time.Time `json:"last_seen"`
	Edge     string    `json:"edge"`
}

// CreateTokenRequest is the body of POST /api/tokens. An empty Kind means
// KindAgent.
type CreateTokenRequest struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// CreateTokenResponse answers POST /api/tokens (201).
type CreateTokenResponse struct {
	Token  Token  `json:"token"`
	Secret string `json:"secret"` // shown this once
}

// TokenResponse answers DELETE /api/tokens/{id}.
type TokenResponse struct {
	Token Token `json:"token"`
}

// ListTokensResponse answers GET /api/tokens.
type ListTokensResponse struct {
	Tokens []Token `json:"tokens"`
}

// TunnelRequest is the body of POST /api/tunnels and PATCH
// /api/tunnels/{name}. A nil field is left as it is by PATCH (and takes
// its default with POST); Name is required by POST and cannot change.
type TunnelRequest struct {
	Name *string `json:"name,omitempty"`
	// Type is wire.TunnelHTTP (the default), wire.TunnelTCP or
	// wire.TunnelUDP. A tcp (udp) tunnel has a tcp:// (udp://) upstream,
	// may have a RemotePort, and has no hostnames, host header or basic
	// auth.
	Type       *string `json:"type,omitempty"`
	Upstream   *string `json:"upstream,omitempty"`
	RemotePort *int    `json:"remote_port,omitempty"`
	// AgentToken (the secret) or AgentTokenID names the agent token the
	// tunnel belongs to.
	AgentToken   *string `json:"agent_token,omitempty"`
	AgentTokenID *string `json:"agent_token_id,omitempty"`
	HostHeader   *string `json:"host_header,omitempty"`
	// BasicAuthUser and BasicAuthPassword protect the tunnel's visitors
	// with basic auth; both "" clear it.
	BasicAuthUser     *string `json:"basic_auth_user,omitempty"`
	BasicAuthPassword *string `json:"basic_auth_password,omitempty"`
	// AllowCIDRs, when not empty, are the only visitor addresses let in;
	// an empty list clears it.
	AllowCIDRs *[]string `json:"allow_cidrs,omitempty"`
	// Hostnames, when given, replace the tunnel's custom hostnames (DNS
	// names not under the edge's domain, each of one tunnel at most; any
	// case, a trailing dot is dropped); an empty list clears them.
	Hostnames *[]string `json:"hostnames,omitempty"`
	Enabled   *bool     `json:"enabled,omitempty"`
}

// TunnelResponse answers POST (201), GET, PATCH and DELETE of a tunnel.
type TunnelResponse struct {
	Tunnel Tunnel `json:"tunnel"`
}

// ListTunnelsResponse answers GET /api/tunnels.
type ListTunnelsResponse struct {
	Tunnels []Tunnel `json:"tunnels"`
}

// ListAgentsResponse answers GET /api/agents.
type ListAgentsResponse struct {
	Agents []Agent `json:"agents"`
}

// NotifyResponse answers POST /api/agents/notify.
type NotifyResponse struct {
	Notified int     `json:"notified"` // connected agents that got config_changed
	TookMS   float64 `json:"took_ms"`  // how long sending took, in milliseconds
}

// AgentConfig answers GET /api/agent/config: a managed agent's tunnels and
// where its push channel is.
type AgentConfig struct {
	AgentTokenID string        `json:"agent_token_id"`
	Tunnels      []AgentTunnel `json:"tunnels"`
	PushURL      string        `json:"push_url"`
	Edge         AgentEdge     `json:"edge"`
}

// AgentTunnel is a tunnel of an AgentConfig.
type AgentTunnel struct {
	Name       string `json:"name"`
	Type       string `json:"type,omitempty"` // "" is wire.TunnelHTTP
	Upstream   string `json:"upstream"`
	RemotePort int    `json:"remote_port,omitempty"` // a tcp or udp tunnel's public port; 0 for any
	HostHeader string `json:"host_header,omitempty"`
	Enabled    bool   `json:"enabled"`
	Version    int64  `json:"version"`
	PublicURL  string `json:"public_url"`
}

// AgentEdge describes the edge to a managed agent.
type AgentEdge struct {
	Domain string `json:"domain"`
}

// Push event types, the event names of GET /api/agent/push.
const (
	EventConfigChanged = "config_changed" // data: ConfigChanged
	EventTunnelDeleted = "tunnel_deleted" // data: TunnelDeleted
	EventTokenRevoked  = "token_revoked"  // data: TokenRevoked
)

// Changes of a ConfigChanged event.
const (
	ChangeCreated = "created"
	ChangeUpdated = "updated"
)

// ReasonNotify is the Reason of the config_changed event that POST
// /api/agents/notify sends to every connected agent.
const ReasonNotify = "notify"

// ReasonResync is the Reason of the config_changed event that an edge of
// a cluster sends to its agents after it may have missed the other edges'
// messages (its link to Redis broke): they fetch their config again.
const ReasonResync = "resync"

// ConfigChanged is the data of a config_changed event: either a tunnel's
// change (Tunnel, Change, Version) or a notification (Reason, SentAt).
type ConfigChanged struct {
	Tunnel  string `json:"tunnel,omitempty"`
	Change  string `json:"change,omitempty"` // ChangeCreated or ChangeUpdated
	Version int64  `json:"version,omitempty"`
	Reason  string `json:"reason,omitempty"`  // ReasonNotify
	SentAt  int64  `json:"sent_at,omitempty"` // Unix nanoseconds
}

// TunnelDeleted is the data of a tunnel_deleted event: the tunnel was
// deleted or given to another agent token.
type TunnelDeleted struct {
	Tunnel string `json:"tunnel"`
}

// TokenRevoked is the data of a token_revoked event.
type TokenRevoked struct {
	TokenID string `json:"token_id"`
}
