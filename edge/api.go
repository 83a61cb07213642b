package edge

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/wire"
	"golang.org/x/crypto/bcrypt"
)

// The admin API, on the apex under /api/, with the store. Every answer is
// JSON, of a type of package api (converted from the store's types, which
// are never API bodies); every error is api.ErrorResponse. Admin requests
// carry "Authorization: Bearer A" with the edge's --admin-token or an admin
// token of the store.

func (s *Server) routeAPI() {
	s.apex.HandleFunc("POST /api/tokens", s.admin(s.createToken))
	s.apex.HandleFunc("GET /api/tokens", s.admin(s.listTokens))
	s.apex.HandleFunc("DELETE /api/tokens/{id}", s.admin(s.revokeToken))
	s.apex.HandleFunc("POST /api/tunnels", s.admin(s.createTunnel))
	s.apex.HandleFunc("GET /api/tunnels", s.admin(s.listTunnels))
	s.apex.HandleFunc("GET /api/tunnels/{name}", s.admin(s.getTunnel))
	s.apex.HandleFunc("PATCH /api/tunnels/{name}", s.admin(s.updateTunnel))
	s.apex.HandleFunc("DELETE /api/tunnels/{name}", s.admin(s.deleteTunnel))
	s.apex.HandleFunc("POST /api/agents/notify", s.admin(s.serveNotify))
	s.apex.HandleFunc("GET /api/agents", s.admin(s.listAgents))
	s.apex.HandleFunc("GET /api/agent/config", s.serveAgentConfig)
	s.apex.HandleFunc("GET /api/agent/push", s.serveAgentPush)
	s.apex.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no API route %s %s", r.Method, r.URL.Path))
	})
}

// apiError writes the API's one error shape (api.WriteError).
var apiError = api.WriteError

var writeJSON = api.WriteJSON

// bearer returns the token of an Authorization: Bearer header.
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// admin lets a handler run for admin credentials only.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" {
			apiError(w, http.StatusUnauthorized, api.CodeUnauthorized, "an admin token is required: Authorization: Bearer TOKEN")
			return
		}
		ok := 0
		for _, a := range s.cfg.AdminTokens {
			ok |= subtle.ConstantTimeCompare([]byte(a), []byte(tok))
		}
		if ok != 1 {
			t, err := s.cfg.Store.Authenticate(r.Context(), tok)
			switch {
			case errors.Is(err, store.ErrRevoked):
				apiError(w, http.StatusUnauthorized, api.CodeTokenRevoked, "this admin token was revoked")
				return
			case err != nil || t.Kind != store.KindAdmin:
				apiError(w, http.StatusUnauthorized, api.CodeUnauthorized, "wrong admin token")
				return
			}
		}
		h(w, r)
	}
}

// decode reads a JSON body of at most 64 KiB into v, rejecting unknown
// fields, and answers 400 itself when it cannot.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		apiError(w, http.StatusBadRequest, api.CodeBadJSON, "the request body is not the JSON expected: "+err.Error())
		return false
	}
	return true
}

// storeError answers for an error of the store.
func storeError(w http.ResponseWriter, err error, what string) {
	var taken *store.HostnameTakenError
	switch {
	case errors.Is(err, store.ErrNotFound):
		apiError(w, http.StatusNotFound, api.CodeNotFound, what+" not found")
	case errors.As(err, &taken):
		msg := "hostname " + taken.Hostname + " belongs to another tunnel"
		if taken.Tunnel != "" {
			msg = "hostname " + taken.Hostname + " belongs to tunnel " + taken.Tunnel
		}
		apiError(w, http.StatusConflict, api.CodeHostnameTaken, msg+"; remove it there first (sluice tunnels update "+cmp.Or(taken.Tunnel, "NAME")+" --hostname ...)")
	case errors.Is(err, store.ErrBadHostname):
		apiError(w, http.StatusBadRequest, api.CodeBadHostname, strings.TrimPrefix(err.Error(), "store: "))
	case errors.Is(err, store.ErrPortTaken):
		apiError(w, http.StatusConflict, api.CodePortTaken, "remote_port belongs to another stored tunnel; give another, or 0 for any")
	case errors.Is(err, store.ErrExists):
		apiError(w, http.StatusConflict, api.CodeExists, what+" already exists")
	default:
		apiError(w, http.StatusInternalServerError, api.CodeStoreError, err.Error())
	}
}

// apiToken is t as the API shows it.
func apiToken(t store.Token) api.Token {
	return api.Token{ID: t.ID, Kind: t.Kind, Name: t.Name, CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt}
}

// apiTunnel is t as the API shows it: without its basic-auth hash.
func apiTunnel(t store.Tunnel) api.Tunnel {
	return api.Tunnel{Name: t.Name, AgentTokenID: t.AgentTokenID, Type: t.Type, Upstream: t.Upstream, RemotePort: t.RemotePort, HostHeader: t.HostHeader,
		BasicAuthUser: t.BasicAuthUser, AllowCIDRs: t.AllowCIDRs, Hostnames: t.Hostnames, Enabled: t.Enabled, Version: t.Version,
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
}

// apiAgent is a as the API shows it.
func apiAgent(a store.Agent) api.Agent {
	return api.Agent{TokenID: a.TokenID, Version: a.Version, LastSeen: a.LastSeen, Edge: a.Edge}
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req api.CreateTokenRequest
	if !decode(w, r, &req) {
		return
	}
	var kind string
	switch req.Kind {
	case "", api.KindAgent:
		kind = store.KindAgent
	case api.KindAdmin:
		kind = store.KindAdmin
	default:
		apiError(w, http.StatusBadRequest, api.CodeBadKind, `kind must be "agent" or "admin"`)
		return
	}
	if len(req.Name) > 200 {
		apiError(w, http.StatusBadRequest, api.CodeBadName, "a token's name is at most 200 bytes")
		return
	}
	t, secret, err := s.cfg.Store.CreateToken(r.Context(), kind, req.Name)
	if err != nil {
		storeError(w, err, "token")
		return
	}
	writeJSON(w, http.StatusCreated, api.CreateTokenResponse{Token: apiToken(t), Secret: secret})
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Store.Tokens(r.Context())
	if err != nil {
		storeError(w, err, "tokens")
		return
	}
	out := api.ListTokensResponse{Tokens: make([]api.Token, 0, len(list))}
	for _, t := range list {
		out.Tokens = append(out.Tokens, apiToken(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	t, err := s.cfg.Store.RevokeToken(r.Context(), r.PathValue("id"))
	if err != nil {
		storeError(w, err, "token "+r.PathValue("id"))
		return
	}
	s.pushSend(r.Context(), t.ID, api.EventTokenRevoked, api.TokenRevoked{TokenID: t.ID})
	// The token's tunnels go offline: their agents are told why, and stop.
	s.decide(r.Context(), decision{TokenID: t.ID, Code: wire.CodeTokenRevoked, Why: "the agent token of this tunnel was revoked"})
	writeJSON(w, http.StatusOK, api.TokenResponse{Token: apiToken(t)})
}

// tunnelChange is a request to create or change a tunnel, and what
// prepare made of it.
type tunnelChange struct {
	api.TunnelRequest
	basicAuthHash *string // from BasicAuthPassword, by prepare
}

// prepare does the work of req that must not happen inside the store's
// transaction: it resolves an agent token's secret to its id and hashes a
// basic-auth password.
func (s *Server) prepare(ctx context.Context, req *tunnelChange) (code, msg string) {
	if req.AgentToken != nil {
		tok, err := s.cfg.Store.Authenticate(ctx, *req.AgentToken)
		if err != nil || tok.Kind != store.KindAgent {
			return api.CodeBadAgentToken, "agent_token is not a valid agent token of this edge"
		}
		req.AgentTokenID = &tok.ID
	}
	if req.BasicAuthPassword != nil {
		h := ""
		if *req.BasicAuthPassword != "" {
			b, err := bcrypt.GenerateFromPassword([]byte(*req.BasicAuthPassword), bcrypt.DefaultCost)
			if err != nil {
				return api.CodeBadBasicAuth, err.Error()
			}
			h = string(b)
		}
		req.basicAuthHash = &h
	}
	return "", ""
}

// apply checks req (after prepare) and applies it to t, or says what is
// wrong (a 400). It does no I/O.
func (s *Server) apply(req *tunnelChange, t *store.Tunnel) (code, msg string) {
	if req.AgentTokenID != nil {
		t.AgentTokenID = *req.AgentTokenID
	}
	if req.Type != nil {
		t.Type = *req.Type
	}
	if req.Upstream != nil {
		t.Upstream = *req.Upstream
	}
	if req.RemotePort != nil {
		t.RemotePort = *req.RemotePort
	}
	if req.HostHeader != nil {
		t.HostHeader = *req.HostHeader
	}
	if req.BasicAuthUser != nil {
		t.BasicAuthUser = *req.BasicAuthUser
		if strings.Contains(t.BasicAuthUser, ":") {
			return api.CodeBadBasicAuth, "basic_auth_user cannot contain ':'"
		}
	}
	if req.basicAuthHash != nil {
		t.BasicAuthHash = *req.basicAuthHash
	}
	if req.AllowCIDRs != nil {
		for _, c := range *req.AllowCIDRs {
			if _, _, err := net.ParseCIDR(c); err != nil {
				return api.CodeBadCIDR, fmt.Sprintf("allow_cidrs: %q is not a CIDR such as 10.0.0.0/8", c)
			}
		}
		t.AllowCIDRs = *req.AllowCIDRs
	}
	if req.Hostnames != nil {
		hs, code, msg := s.checkHostnames(*req.Hostnames)
		if code != "" {
			return code, msg
		}
		t.Hostnames = hs
	}
	if req.Enabled != nil {
		t.Enabled = *req.Enabled
	}
	if (t.BasicAuthUser == "") != (t.BasicAuthHash == "") {
		return api.CodeBadBasicAuth, "basic auth needs both basic_auth_user and basic_auth_password"
	}
	if code, msg := checkType(req, t); code != "" {
		return code, msg
	}
	if t.AgentTokenID == "" {
		return api.CodeBadAgentToken, "a tunnel needs its agent's token: agent_token (the secret) or agent_token_id"
	}
	return "", ""
}

// exampleUpstream is an upstream a tunnel of type typ may have, for the
// messages that ask for one.
func exampleUpstream(typ string) string {
	switch typ {
	case wire.TunnelTCP:
		return "tcp://127.0.0.1:5432"
	case wire.TunnelUDP:
		return "udp://127.0.0.1:53"
	}
	return "http://127.0.0.1:3000"
}

// checkType checks that t's upstream, remote port and options go with its
// type (an http tunnel when it has none). A tcp and a udp tunnel follow
// the same rules, each with upstreams of its own scheme.
func checkType(req *tunnelChange, t *store.Tunnel) (code, msg string) {
	typ := t.Type
	switch typ {
	case "":
		typ, t.Type = wire.TunnelHTTP, wire.TunnelHTTP
	case wire.TunnelHTTP, wire.TunnelTCP, wire.TunnelUDP:
	default:
		return api.CodeBadType, fmt.Sprintf("type %q is not %q, %q or %q", typ, wire.TunnelHTTP, wire.TunnelTCP, wire.TunnelUDP)
	}
	if typ == wire.TunnelHTTP {
		if t.RemotePort != 0 {
			return api.CodeBadType, "remote_port is for tunnels of type tcp or udp"
		}
		if t.Upstream != "" && (req.Upstream != nil || req.Type != nil) {
			if _, err := api.ParseUpstream(t.Upstream); err != nil {
				msg := "upstream " + err.Error()
				for _, other := range []string{wire.TunnelTCP, wire.TunnelUDP} {
					if strings.HasPrefix(t.Upstream, other+"://") {
						msg += fmt.Sprintf(" (%s:// upstreams are for tunnels of type %s)", other, other)
					}
				}
				return api.CodeBadUpstream, msg
			}
		}
		return "", ""
	}
	if t.Upstream != "" && (req.Upstream != nil || req.Type != nil) {
		if _, err := api.ParseAddrUpstream(typ, t.Upstream); err != nil {
			return api.CodeBadUpstream, "upstream " + err.Error() + ", as a tunnel of type " + typ + " needs, such as " + exampleUpstream(typ)
		}
	}
	switch {
	case t.RemotePort < 0 || t.RemotePort > 65535:
		return api.CodeBadType, fmt.Sprintf("remote_port %d is not a port (1 to 65535, or 0 for one from the edge's range)", t.RemotePort)
	case len(t.Hostnames) > 0:
		return api.CodeBadType, "a tunnel of type " + typ + " has no hostnames (its visitors come to its port, not to a hostname)"
	case t.BasicAuthUser != "":
		return api.CodeBadType, "basic auth does not apply to a tunnel of type " + typ + " (there is no HTTP request to ask it of); use allow_cidrs"
	case t.HostHeader != "":
		return api.CodeBadType, "host_header does not apply to a tunnel of type " + typ
	}
	return "", ""
}

func (s *Server) createTunnel(w http.ResponseWriter, r *http.Request) {
	var req tunnelChange
	if !decode(w, r, &req.TunnelRequest) {
		return
	}
	if req.Name == nil || !ValidName(*req.Name) {
		name := ""
		if req.Name != nil {
			name = *req.Name
		}
		apiError(w, http.StatusBadRequest, api.CodeBadName, fmt.Sprintf("name %q is not a DNS label (a-z, 0-9 and '-', 1 to 63 long)", name))
		return
	}
	t := store.Tunnel{Name: *req.Name, Enabled: true}
	code, msg := s.prepare(r.Context(), &req)
	if code == "" {
		code, msg = s.apply(&req, &t)
	}
	if code != "" {
		apiError(w, http.StatusBadRequest, code, msg)
		return
	}
	if t.Upstream == "" {
		apiError(w, http.StatusBadRequest, api.CodeBadUpstream, "a tunnel needs an upstream URL, such as "+exampleUpstream(t.Type))
		return
	}
	t, err := s.cfg.Store.CreateTunnel(r.Context(), t)
	if err != nil {
		storeError(w, err, "tunnel "+*req.Name+" or its agent token")
		return
	}
	s.tunnelChanged(r.Context(), t.Name)
	// The name is the owner's from now on: an agent that held it with
	// another token (before it was stored) is ended, before the owner's
	// agent hears of the tunnel.
	s.retireOthers(r.Context(), t.Name, t.AgentTokenID, "the operator gave tunnel "+t.Name+" to another agent token")
	s.pushSend(r.Context(), t.AgentTokenID, api.EventConfigChanged, api.ConfigChanged{Tunnel: t.Name, Change: api.ChangeCreated, Version: t.Version})
	writeJSON(w, http.StatusCreated, api.TunnelResponse{Tunnel: apiTunnel(t)})
}

func (s *Server) listTunnels(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Store.Tunnels(r.Context(), "")
	if err != nil {
		storeError(w, err, "tunnels")
		return
	}
	out := api.ListTunnelsResponse{Tunnels: make([]api.Tunnel, 0, len(list))}
	for _, t := range list {
		out.Tunnels = append(out.Tunnels, apiTunnel(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getTunnel(w http.ResponseWriter, r *http.Request) {
	t, err := s.cfg.Store.Tunnel(r.Context(), r.PathValue("name"))
	if err != nil {
		storeError(w, err, "tunnel "+r.PathValue("name"))
		return
	}
	writeJSON(w, http.StatusOK, api.TunnelResponse{Tunnel: apiTunnel(t)})
}

func (s *Server) updateTunnel(w http.ResponseWriter, r *http.Request) {
	var req tunnelChange
	if !decode(w, r, &req.TunnelRequest) {
		return
	}
	name := r.PathValue("name")
	if req.Name != nil && *req.Name != name {
		apiError(w, http.StatusBadRequest, api.CodeBadName, "a tunnel cannot be renamed; create another")
		return
	}
	code, msg := s.prepare(r.Context(), &req)
	if code != "" {
		apiError(w, http.StatusBadRequest, code, msg)
		return
	}
	var before string // the agent token the tunnel belonged to
	t, err := s.cfg.Store.UpdateTunnel(r.Context(), name, func(t *store.Tunnel) error {
		before = t.AgentTokenID
		if code, msg = s.apply(&req, t); code != "" {
			return errors.New(msg)
		}
		return nil
	})
	if code != "" {
		apiError(w, http.StatusBadRequest, code, msg)
		return
	}
	if err != nil {
		storeError(w, err, "tunnel "+name+" or its agent token")
		return
	}
	s.tunnelChanged(r.Context(), t.Name)
	switch {
	case !t.Enabled:
		s.decide(r.Context(), decision{Name: t.Name, Code: wire.CodeTunnelDisabled, Why: "the tunnel was disabled by its operator"})
	case before != t.AgentTokenID:
		s.retireOthers(r.Context(), t.Name, t.AgentTokenID, "the operator gave tunnel "+t.Name+" to another agent token")
	}
	if before != t.AgentTokenID {
		s.pushSend(r.Context(), before, api.EventTunnelDeleted, api.TunnelDeleted{Tunnel: t.Name})
	}
	s.pushSend(r.Context(), t.AgentTokenID, api.EventConfigChanged, api.ConfigChanged{Tunnel: t.Name, Change: api.ChangeUpdated, Version: t.Version})
	writeJSON(w, http.StatusOK, api.TunnelResponse{Tunnel: apiTunnel(t)})
}

func (s *Server) deleteTunnel(w http.ResponseWriter, r *http.Request) {
	t, err := s.cfg.Store.DeleteTunnel(r.Context(), r.PathValue("name"))
	if err != nil {
		storeError(w, err, "tunnel "+r.PathValue("name"))
		return
	}
	s.tunnelChanged(r.Context(), t.Name)
	s.pushSend(r.Context(), t.AgentTokenID, api.EventTunnelDeleted, api.TunnelDeleted{Tunnel: t.Name})
	s.decide(r.Context(), decision{Name: t.Name, Code: wire.CodeTunnelDeleted, Why: "the tunnel was deleted by its operator"})
	writeJSON(w, http.StatusOK, api.TunnelResponse{Tunnel: apiTunnel(t)})
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Store.Agents(r.Context())
	if err != nil {
		storeError(w, err, "agents")
		return
	}
	out := api.ListAgentsResponse{Agents: make([]api.Agent, 0, len(list))}
	for _, a := range list {
		out.Agents = append(out.Agents, apiAgent(a))
	}
	writeJSON(w, http.StatusOK, out)
}

// retire applies an admin's decision to the registry: the names and
// sessions that match are ended at once (new requests get the reason, no
// reservation is kept; see registry.end), and each agent gets an error
// frame with code and why (and stops) in the background, while its requests
// in flight may finish within replacedGrace.
func (s *Server) retire(match func(name, token string) bool, code, why string) {
	for _, sess := range s.registry.end(match, code) {
		s.metrics.tunnelsOnline.Dec()
		s.agents.Add(1)
		go func() {
			defer s.agents.Done()
			ctx, cancel := context.WithTimeout(s.ctx, replacedGrace)
			defer cancel()
			sess.Retire(ctx, code, why)
		}()
	}
}

// retireOthers ends, at every edge, whoever holds or reserves tunnel name
// with a token other than its stored owner's (ownerID): an admin just
// created the tunnel or gave it to ownerID, so the name is the owner's at
// once.
func (s *Server) retireOthers(ctx context.Context, name, ownerID, why string) {
	s.decide(ctx, decision{Name: name, OwnerID: ownerID, Code: wire.CodeTunnelReplaced, Why: why})
}
