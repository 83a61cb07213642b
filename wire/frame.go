package wire

import "net/http"

// Frame types of protocol v1.
const (
	// Agent to edge.
	TypeRegister          = "register"
	TypeHTTPResponse      = "http_response"
	TypeHTTPResponseStart = "http_response_start"
	TypeHTTPResponseChunk = "http_response_chunk"
	TypeHTTPResponseEnd   = "http_response_end"
	TypeHTTPResponseInfo  = "http_response_info" // FeatureInformational

	// Edge to agent.
	TypeRegistered       = "registered"
	TypeError            = "error"
	TypeHTTPRequest      = "http_request"
	TypeHTTPRequestStart = "http_request_start"
	TypeHTTPRequestChunk = "http_request_chunk"
	TypeHTTPRequestEnd   = "http_request_end"
	TypeHTTPCancel       = "http_cancel"

	// Both ways.
	TypeWindowUpdate = "window_update"
	TypeTCPConnect   = "tcp_connect"
	TypeTCPData      = "tcp_data"
	TypeTCPClose     = "tcp_close"
	TypeUDPData      = "udp_data"

	// Agent to edge, protocol v2 with FeaturePipe: the agent's local
	// server changed; pipes open until now go where it was.
	TypePipeReset = "pipe_reset"
)

// Features an agent announces in register and an edge confirms in
// registered. A peer that announces none is a plain Jetty agent or edge.
const (
	// FeatureRequestStream: the agent accepts http_request_start/_chunk/_end
	// instead of whole http_request frames.
	FeatureRequestStream = "request_stream"
	// FeatureWindow: both sides send window_update credits for body bytes.
	FeatureWindow = "window"
	// FeatureCancel: the agent accepts http_cancel.
	FeatureCancel = "cancel"
	// FeatureMultiValueHeaders: header values may be arrays of strings.
	FeatureMultiValueHeaders = "multi_value_headers"
	// FeatureTrailers: http_response_end may carry the response's trailers,
	// announced by a Trailer header in http_response_start.
	FeatureTrailers = "trailers"
	// FeatureUpgrade: an upgrade request (WebSocket) is sent as
	// http_request_start without an end; a 101 http_response_start answers
	// it, after which http_request_chunk and http_response_chunk carry the
	// two directions of the upgraded connection, within windows, until an
	// http_response_end, an http_request_end or an http_cancel.
	FeatureUpgrade = "upgrade"
	// FeatureAccess: the register frame carries visitor rules for an
	// ad-hoc tunnel (basic_auth_user, basic_auth_bcrypt, allow_cidrs), and
	// the edge enforces them. An agent announces it only when it sends
	// rules, and must not serve unless registered confirms it: an edge
	// that does not know the fields ignores them.
	FeatureAccess = "access"
	// FeatureInitialWindow: with FeatureWindow, a stream's first response
	// window is not the protocol's 512 KiB but what the edge announces in
	// registered's window member (possibly 0); the edge grows it with
	// window_update frames, which it sends only after the request's head.
	// An edge confirms it only with FeatureWindow.
	FeatureInitialWindow = "initial_window"
	// FeatureInformational: the agent sends the informational responses
	// (1xx but 101: 100 Continue, 103 Early Hints) of a request as
	// http_response_info frames before its head; and a request that
	// expects 100-continue reaches the agent with its Expect header while
	// the edge holds its body back until the agent's 100 (or its final
	// response). In v2 the 1xx are HTTP/2's own; the feature says the
	// agent takes the expectation through (see docs/protocol.md).
	FeatureInformational = "informational"
	// FeatureTCPHalfClose: a tcp_close whose reason is "eof" says only that
	// its sender finished writing (a half-close); the connection ends when
	// both sides sent one. Any other reason, or none, is a full close (a
	// reset when the connection was not finished). Without it every
	// tcp_close is a full close, as for the Jetty agent.
	FeatureTCPHalfClose = "tcp_half_close"
	// FeaturePipe (protocol v2 only, like FeatureAccess not in Features):
	// the agent pipes streams to its local server, on which the edge
	// carries simple requests as HTTP/1.1 bytes (docs/protocol.md,
	// "Pipes"). An agent announces it only when nothing of its own must
	// see each request, and an edge confirms it when it uses pipes.
	FeaturePipe = "pipe"
)

// Tunnel types: the tunnel_type of register. An absent tunnel_type is
// TunnelHTTP.
const (
	TunnelHTTP = "http" // HTTP requests to a public URL
	TunnelTCP  = "tcp"  // TCP connections to a public port, each one a stream (tcp_* frames in v1)
	TunnelUDP  = "udp"  // UDP datagrams to a public port, a session per remote address (udp_data in v1)
)

// ReasonEOF is the reason of a tcp_close that half-closes (with
// FeatureTCPHalfClose).
const ReasonEOF = "eof"

// Features lists every extension this implementation speaks, in the order
// an agent announces them; an edge confirms the ones it shares.
var Features = []string{FeatureRequestStream, FeatureWindow, FeatureCancel, FeatureMultiValueHeaders, FeatureTrailers, FeatureUpgrade, FeatureInitialWindow, FeatureInformational, FeatureTCPHalfClose}

// Error codes: the code of an error frame (v1 and v2, before and after
// registration), and of the edge's error pages and API errors where the
// same condition reaches a visitor or an operator.
const (
	// Refusals of a register frame; the agent does not retry them.
	CodeBadRegister     = "bad_register"      // the first frame was not a valid register
	CodeInvalidTunnelID = "invalid_tunnel_id" // tunnel_id is not a DNS label
	CodeUnauthorized    = "unauthorized"      // wrong or missing token
	CodeTunnelTaken     = "tunnel_taken"      // the name belongs to another token
	CodeNoV2            = "no_v2"             // the agent asked for v2 and the edge offers only v1 (agent side)
	CodeNoAccess        = "no_access"         // the agent sent visitor rules and the edge did not confirm "access" (agent side)
	CodeNoTCP           = "no_tcp"            // the agent asked for a TCP tunnel and the edge answered with no tcp:// public URL (agent side)
	CodeNoUDP           = "no_udp"            // the agent asked for a UDP tunnel and the edge answered with no udp:// public URL (agent side)
	CodePortUnavailable = "port_unavailable"  // the public port asked for is outside the edge's TCP range, or in use
	CodeNoTCPPorts      = "no_tcp_ports"      // the edge serves no TCP tunnels, or has no free port left
	CodeNoUDPPorts      = "no_udp_ports"      // the edge serves no UDP tunnels, or has no free port left
	CodeBadAccess       = "bad_access"        // the visitor rules of register are malformed (a CIDR, the bcrypt hash)
	CodeAccessStored    = "access_stored"     // visitor rules sent for a stored tunnel, whose own rules apply
	CodeInternal        = "internal_error"    // the edge failed to decide (a store error); details are in its log

	// The edge retires a registered session; the agent stops instead of
	// reconnecting.
	CodeTunnelReplaced = "tunnel_replaced" // another agent took the name with the same token, or an admin re-owned it
	CodeTunnelDeleted  = "tunnel_deleted"  // an admin deleted the tunnel
	CodeTunnelDisabled = "tunnel_disabled" // an admin disabled the tunnel
	CodeTokenRevoked   = "token_revoked"   // an admin revoked the agent's token

	// Seen by visitors: the code of an error page (its JSON body's
	// error.code), from the edge or the agent.
	CodeTunnelNotFound     = "tunnel_not_found"
	CodeTunnelError        = "tunnel_error"
	CodeUpgradeUnsupported = "upgrade_unsupported"
	CodeAgentOffline       = "agent_offline"
	CodeTooManyStreams     = "too_many_streams"
	CodeBodyTooLarge       = "body_too_large"
	CodeIPNotAllowed       = "ip_not_allowed"
	CodeVisitorAuth        = "visitor_auth"
	CodeAuthRateLimited    = "auth_rate_limited"
	CodeStoreUnavailable   = "store_error"
	CodeNotFound           = "not_found"
	CodeUpstreamRefused    = "upstream_refused"
	CodeUpstreamTimeout    = "upstream_timeout"
	CodeUpstreamError      = "upstream_error"
	CodeClusterUnavailable = "cluster_unavailable" // the edge cannot read its cluster's routing table (Redis) now
	CodeBadClusterAuth     = "bad_cluster_auth"    // a Sluice-Cluster field not signed with the cluster secret
)

// Final reports whether an error frame with code, received after
// registration, ends the agent for good: the edge retired it, and
// reconnecting would be refused (or take the name back from its rightful
// holder). Refusals of register are always final.
func Final(code string) bool {
	switch code {
	case CodeTunnelReplaced, CodeTunnelDeleted, CodeTunnelDisabled, CodeTokenRevoked:
		return true
	}
	return false
}

// Frame is one protocol v1 message. Only the fields of its Type are
// meaningful; the codec writes those and reads whatever is present.
type Frame struct {
	Type string

	// register, registered, error
	TunnelID   string   // tunnel_id
	AgentToken string   // agent_token
	Features   []string // features
	PublicURL  string   // public_url
	Message    string   // message
	Code       string   // code (a number is read as its decimal text)
	// registered, with FeatureInitialWindow: each stream's first response
	// window in bytes (window). Zero is not sent: a peer reads its
	// absence as zero.
	Window int64

	// register: an ad-hoc tunnel's visitor rules (with FeatureAccess)
	BasicAuthUser   string   // basic_auth_user
	BasicAuthBcrypt string   // basic_auth_bcrypt: a bcrypt hash of the password, never the password
	AllowCIDRs      []string // allow_cidrs

	// register: the kind of tunnel (tunnel_type: TunnelHTTP when empty,
	// TunnelTCP) and, for TCP, the public port asked for (remote_port: 0
	// or absent = any the edge chooses).
	TunnelType string // tunnel_type
	RemotePort int    // remote_port

	// http_*
	RequestID string      // request_id (a number is read as its decimal text)
	Method    string      // method
	Path      string      // path, without the query
	Query     string      // query, raw and without "?"; an object is read as a query
	Headers   http.Header // headers: name to a string or an array of strings
	Status    int         // status
	Body      []byte      // body_b64
	Data      []byte      // data_b64
	Error     string      // error (http_response_end: the upstream failed mid-body)
	Trailers  http.Header // trailers (http_response_end): as headers
	Bytes     int64       // bytes (window_update)

	// tcp_*, udp_data
	ConnectionID string // connection_id
	RemoteAddr   string // remote_addr
	Reason       string // reason
}

// Reset clears f for reuse, keeping the capacity of its Data and Body
// buffers.
func (f *Frame) Reset() {
	data, body := f.Data[:0], f.Body[:0]
	*f = Frame{Data: data, Body: body}
}

// HasFeature reports whether features contains name.
func HasFeature(features []string, name string) bool {
	for _, f := range features {
		if f == name {
			return true
		}
	}
	return false
}
