package tunnel

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// The handshake: the agent opens a WebSocket to the edge's /agent, offering
// the sluice.v2 subprotocol unless it speaks v1 only; its first message is a
// register frame; the edge answers registered (then the session runs, v1 or
// v2 as the subprotocol says) or an error frame (then it closes). Both ends
// of it live here, so that a session is only ever handed out open: no
// request can precede registered.

// maxRegisterSize bounds the agent's register frame.
const maxRegisterSize = 64 << 10

// Registration is an agent's register frame, as the edge's Authorize sees
// it.
type Registration struct {
	// TunnelID is the name the agent asked for, as it sent it.
	TunnelID string
	// Token is the agent's credential.
	Token string
	// Features are the extensions the agent announced; nil for a plain
	// Jetty agent, which announces none.
	Features []string
	// Access is the visitor rules the agent sent for an ad-hoc tunnel
	// (with wire.FeatureAccess), nil if none; unchecked.
	Access *Access
	// Protocol is ProtocolV1 or ProtocolV2, as the WebSocket negotiated.
	Protocol string
	// Type is the kind of tunnel asked for: wire.TunnelHTTP (also when
	// register had no tunnel_type) or wire.TunnelTCP; Accept refuses any
	// other with wire.CodeBadRegister.
	Type string
	// RemotePort is the public port a TCP tunnel asked for, as sent (0:
	// any); Accept refuses one outside 0-65535, or one for an HTTP
	// tunnel, with wire.CodeBadRegister.
	RemotePort int
	// Request is the agent's WebSocket request (remote address,
	// User-Agent).
	Request *http.Request
}

// Access is an ad-hoc tunnel's visitor rules, sent in register
// (basic_auth_user, basic_auth_bcrypt, allow_cidrs) for the edge to
// enforce. The password crosses the wire only as a bcrypt hash.
type Access struct {
	// BasicAuthUser and BasicAuthBcrypt (a bcrypt hash of the password):
	// visitors must give that user and password; both or neither.
	BasicAuthUser   string
	BasicAuthBcrypt string
	// AllowCIDRs: visitors must come from one of these networks.
	AllowCIDRs []string
}

// empty reports whether a sets no rule.
func (a *Access) empty() bool {
	return a == nil || a.BasicAuthUser == "" && a.BasicAuthBcrypt == "" && len(a.AllowCIDRs) == 0
}

// Grant is the edge's acceptance of a Registration.
type Grant struct {
	// TunnelID is the name confirmed to the agent in registered.
	TunnelID string
	// PublicURL is the tunnel's public URL, sent in registered.
	PublicURL string
	// Logger, if set, is the session's logger instead of Config.Logger.
	Logger *slog.Logger
	// Access says that the edge enforces the Registration's Access: only
	// then is wire.FeatureAccess confirmed in registered (an agent that
	// sent rules does not serve without it).
	Access bool
	// Attach, if set, is called with the new session just before
	// registered is sent: the caller may route requests to it at once,
	// since the session holds them until registered is out (and fails them
	// if it could not be sent). An error refuses the registration as
	// Authorize's would, and the session is closed.
	Attach func(Session) error
}

// RegisterError is the edge's refusal of a registration: an error frame
// with a code (wire.Code...) and a message for the agent's user. Agents do
// not retry it, except wire.CodeInternal (the edge could not decide).
type RegisterError struct {
	Code    string
	Message string
}

func (e *RegisterError) Error() string {
	return fmt.Sprintf("tunnel: the edge refused the tunnel: %s (%s)", e.Message, e.Code)
}

// AcceptConfig configures the edge's side of the handshake.
type AcceptConfig struct {
	Config
	// DisableV2 offers protocol v1 only.
	DisableV2 bool
	// DisablePipes does not confirm wire.FeaturePipe (sluice edge
	// --pipes=false): every request of a v2 agent is a stream of its own.
	DisablePipes bool
	// Authorize decides on a well-formed registration. A *RegisterError
	// refuses with its code and message; any other error refuses with
	// wire.CodeInternal and a message that does not repeat it.
	Authorize func(ctx context.Context, reg *Registration) (*Grant, error)
}

// upgrader is the edge's WebSocket upgrader for agents. Before an agent
// has authenticated, its connection must cost little (issue 11: 148 KB
// each with fixed 64 KiB buffers): it reads through the 4 KiB buffer the
// HTTP server already gave the connection (ReadBufferSize 0 reuses it),
// and writes through 64 KiB buffers from a pool, held only while a message
// is being written. Large messages bypass both buffers (gorilla writes a
// server's message and its header with one writev, and reads into the
// caller's slice once the buffer is empty), so after authentication the
// session keeps its speed: checked with BenchmarkThroughput.
var upgrader = websocket.Upgrader{
	WriteBufferSize: 64 << 10,
	WriteBufferPool: &sync.Pool{},
	// Agents are not browsers and authenticate with a token, so the
	// Origin check that protects cookies does not apply.
	CheckOrigin: func(*http.Request) bool { return true },
}

// ErrUpgrade is returned by Accept when r was not a valid WebSocket
// handshake; the client has been answered already.
var ErrUpgrade = errors.New("tunnel: not a WebSocket handshake")

// Accept runs the edge's side of the handshake on an agent's request to
// /agent: it upgrades the connection, reads the register frame within
// HandshakeTimeout, asks Authorize, and answers. It returns the session,
// open (registered was sent) and ready for Run and RoundTrip, or an error:
// ErrUpgrade, a *RegisterError for a refusal (a malformed register is
// CodeBadRegister), or the connection's failure. On error the connection
// is closed.
func Accept(w http.ResponseWriter, r *http.Request, cfg AcceptConfig) (Session, error) {
	cfg.Config = cfg.Config.WithDefaults()
	up := upgrader
	if !cfg.DisableV2 {
		up.Subprotocols = []string{Subprotocol}
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUpgrade, err)
	}
	reg, err := readRegister(ws, cfg.HandshakeTimeout)
	if err != nil {
		refuse(ws, &RegisterError{Code: wire.CodeBadRegister, Message: err.Error()})
		return nil, &RegisterError{Code: wire.CodeBadRegister, Message: err.Error()}
	}
	reg.Protocol = ProtocolV1
	if ws.Subprotocol() == Subprotocol {
		reg.Protocol = ProtocolV2
	}
	reg.Request = r
	grant, err := cfg.Authorize(r.Context(), reg)
	if err == nil && grant == nil {
		err = errors.New("tunnel: Authorize granted nothing")
	}
	if err != nil {
		re := cfg.refusal(err)
		refuse(ws, re)
		return nil, re
	}
	var features []string
	for _, f := range reg.Features {
		if wire.HasFeature(wire.Features, f) && (f != wire.FeatureInitialWindow || wire.HasFeature(reg.Features, wire.FeatureWindow)) {
			features = append(features, f)
		}
	}
	answer := wire.Frame{Type: wire.TypeRegistered, TunnelID: grant.TunnelID, PublicURL: grant.PublicURL}
	if wire.HasFeature(features, wire.FeatureInitialWindow) {
		answer.Window = int64(min(initialWindowV1, cfg.V1.Window))
	}
	// Pipes: an HTTP tunnel's v2 agent that offers them.
	pipe := reg.Protocol == ProtocolV2 && reg.Type == wire.TunnelHTTP && !cfg.DisablePipes && wire.HasFeature(reg.Features, wire.FeaturePipe)
	if reg.Features != nil {
		answer.Features = append([]string{}, features...)
		if grant.Access && wire.HasFeature(reg.Features, wire.FeatureAccess) {
			answer.Features = append(answer.Features, wire.FeatureAccess)
		}
		if pipe {
			answer.Features = append(answer.Features, wire.FeaturePipe)
		}
	}
	sc := cfg.Config
	if grant.Logger != nil {
		sc.Logger = grant.Logger
	}
	sc.tcp = reg.Type == wire.TunnelTCP
	sc.udp = reg.Type == wire.TunnelUDP
	// The session exists before registered goes out (Attach may route to
	// it), but holds every request until then.
	var s interface {
		Session
		opened()
	}
	var send func(*wire.Frame) error
	start := func() error { return nil }
	if reg.Protocol == ProtocolV2 {
		v2 := newV2Edge(ws, sc, features, pipe)
		s, start = v2, v2.start
		send = func(f *wire.Frame) error { return v2.writeText(f, cfg.HandshakeTimeout) }
	} else {
		v1 := newV1Edge(ws, v1Session(sc, features, answer.Window))
		s = v1
		send = func(f *wire.Frame) error { return v1.conn.writeFrameWithin(f, cfg.HandshakeTimeout) }
	}
	if grant.Attach != nil {
		if err := grant.Attach(s); err != nil {
			re := cfg.refusal(err)
			send(&wire.Frame{Type: wire.TypeError, Code: re.Code, Message: re.Message})
			s.Close()
			return nil, re
		}
	}
	if err := send(&answer); err != nil {
		s.Close()
		return nil, fmt.Errorf("tunnel: send registered: %w", err)
	}
	if err := start(); err != nil {
		s.Close()
		return nil, err
	}
	s.opened()
	return s, nil
}

// refusal turns Authorize's or Attach's error into the refusal sent.
func (cfg *AcceptConfig) refusal(err error) *RegisterError {
	var re *RegisterError
	if !errors.As(err, &re) {
		cfg.Logger.Error("authorizing an agent failed", "err", err)
		re = &RegisterError{Code: wire.CodeInternal, Message: "the edge could not register the tunnel; try again later"}
	}
	return re
}

// readRegister reads the agent's first message, which must be a register
// frame.
func readRegister(ws *websocket.Conn, timeout time.Duration) (*Registration, error) {
	ws.SetReadDeadline(time.Now().Add(timeout))
	ws.SetReadLimit(maxRegisterSize)
	typ, msg, err := ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("no register frame: %w", err)
	}
	ws.SetReadDeadline(time.Time{})
	ws.SetReadLimit(0)
	if typ != websocket.TextMessage {
		return nil, errors.New("first message must be a JSON register frame")
	}
	var f wire.Frame
	if err := wire.Decode(msg, &f); err != nil {
		return nil, err
	}
	if f.Type != wire.TypeRegister {
		return nil, fmt.Errorf("first frame must be register, got %q", f.Type)
	}
	reg := &Registration{TunnelID: f.TunnelID, Token: f.AgentToken, Features: f.Features, Type: cmp.Or(f.TunnelType, wire.TunnelHTTP), RemotePort: f.RemotePort}
	switch {
	case reg.Type != wire.TunnelHTTP && reg.Type != wire.TunnelTCP && reg.Type != wire.TunnelUDP:
		return nil, fmt.Errorf("tunnel_type %q is not %q, %q or %q", f.TunnelType, wire.TunnelHTTP, wire.TunnelTCP, wire.TunnelUDP)
	case reg.RemotePort < 0 || reg.RemotePort > 65535:
		return nil, fmt.Errorf("remote_port %d is not a port (0-65535)", reg.RemotePort)
	case reg.RemotePort != 0 && reg.Type == wire.TunnelHTTP:
		return nil, fmt.Errorf("remote_port is for tunnel_type %q and %q only", wire.TunnelTCP, wire.TunnelUDP)
	}
	if a := (&Access{BasicAuthUser: f.BasicAuthUser, BasicAuthBcrypt: f.BasicAuthBcrypt, AllowCIDRs: f.AllowCIDRs}); !a.empty() {
		reg.Access = a
	}
	return reg, nil
}

// refuse sends an error frame and closes the connection.
func refuse(ws *websocket.Conn, re *RegisterError) {
	f := wire.Frame{Type: wire.TypeError, Code: re.Code, Message: re.Message}
	ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	ws.WriteMessage(websocket.TextMessage, wire.AppendFrame(nil, &f, wire.EncodeOptions{}))
	ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, re.Code))
	ws.Close()
}

// DialConfig configures the agent's side of the handshake.
type DialConfig struct {
	Config
	// URL is the edge's agent endpoint: ws:// or wss://, path /agent.
	URL string
	// TunnelID is the tunnel's name; Token the agent's credential.
	TunnelID string
	Token    string
	// Protocol is "auto" or "" (v2 when the edge offers it, else v1), "v1"
	// or "v2" (a *RegisterError with wire.CodeNoV2 when the edge does not
	// offer it).
	Protocol string
	// Features are the v1 extensions to announce. Nil means wire.Features;
	// an empty slice announces none (a plain Jetty agent).
	Features []string
	// Access, if it sets a rule, is sent with register (announcing
	// wire.FeatureAccess); an edge that does not confirm the feature is
	// refused here with wire.CodeNoAccess, so that the tunnel never serves
	// without the rules.
	Access *Access
	// Type is the kind of tunnel: wire.TunnelHTTP or "" (HTTP; no
	// tunnel_type is sent, as a Jetty agent does), wire.TunnelTCP or
	// wire.TunnelUDP.
	Type string
	// RemotePort is the public port asked for a TCP or UDP tunnel (0: any
	// the edge chooses).
	RemotePort int
	// DialTCP opens the local connection for each TCP connection the edge
	// opens (a TCP tunnel); the session copies bytes both ways, passes
	// half-closes on with CloseWrite when the conn has it, and sends a
	// dial error's text to the edge as the reason the connection closed.
	// Nil refuses every TCP connection.
	DialTCP func(ctx context.Context, remoteAddr string) (net.Conn, error)
	// DialUDP opens the local socket for each UDP session the edge opens
	// (a UDP tunnel): a connected UDP net.Conn (or any net.Conn whose Read
	// and Write keep datagram boundaries), read with MaxDatagram-byte
	// buffers. The session ends when no datagram went either way for
	// UDPIdleTimeout, and then closes it. Nil refuses every UDP session.
	DialUDP func(ctx context.Context, remoteAddr string) (net.Conn, error)
	// UDPIdleTimeout ends an idle UDP session at the agent. Zero means
	// DefaultUDPIdleTimeout (60 s).
	UDPIdleTimeout time.Duration
	// Pipe, if set, offers an HTTP tunnel's edge (protocol v2) pipes
	// (wire.FeaturePipe): streams on which the edge sends simple requests
	// as HTTP/1.1 bytes, each pumped to the connection Pipe opens to the
	// local server, as a TCP tunnel's are. Offer them only when the
	// handler would do nothing but pass such requests on as they are: the
	// edge carries them without it. ErrNoPipe refuses one (the edge then
	// sends requests as streams of their own until ResetPipes); another
	// error is sent as the reason, as for DialTCP. To answer the edge's
	// request with an error page instead, return a conn that reads as
	// that page (the agent's does).
	Pipe func(ctx context.Context) (net.Conn, error)
	// UserAgent is sent with the WebSocket handshake; the edge records it
	// as the agent's version. Empty means "sluice-agent".
	UserAgent string
	// TLSClientConfig, if set, is used for wss:// edges.
	TLSClientConfig *tls.Config
	// NetDialContext, if set, opens the connection to the edge instead of
	// net.Dialer (a SOCKS dialer, or an in-memory pipe in tests).
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// AgentSession is the agent's end of a registered connection. Serve runs
// it; Close abandons it unserved.
type AgentSession struct {
	// PublicURL is the tunnel's public URL as the edge sent it ("" if it
	// sent none).
	PublicURL string
	// Protocol is ProtocolV1 or ProtocolV2.
	Protocol string
	// Features are the v1 extensions the edge confirmed.
	Features []string
	// window is the first response window registered announced (with
	// wire.FeatureInitialWindow).
	window int64

	ws   *websocket.Conn
	cfg  Config
	dial dialers
	conn atomic.Pointer[WSConn] // v2's, while Serve runs
}

// Pipes reports whether the edge confirmed pipes (DialConfig.Pipe).
func (s *AgentSession) Pipes() bool { return s.dial.pipe != nil }

// ResetPipes tells the edge that the local server changed: the pipes it
// holds go where the server was, and are dropped (those in use once their
// response ended); refused ones (ErrNoPipe) are asked for again. Nothing
// without pipes, or before Serve.
func (s *AgentSession) ResetPipes() error {
	c := s.conn.Load()
	if s.dial.pipe == nil || c == nil {
		return nil
	}
	return writePipeReset(c, s.cfg.HandshakeTimeout)
}

// Dial connects to the edge, registers and returns the open session, or
// an error: a *RegisterError when the edge refused (retry only
// wire.CodeInternal), the connection's failure otherwise.
func Dial(ctx context.Context, cfg DialConfig) (*AgentSession, error) {
	cfg.Config = cfg.Config.WithDefaults()
	dialer := websocket.Dialer{
		ReadBufferSize: 64 << 10,
		// A client masks what it sends, through its write buffer, and
		// each full buffer is one write syscall: a large buffer (one per
		// tunnel) makes fewer of them (measured: v2 downloads 10% faster
		// than with 64 KiB).
		WriteBufferSize:  256 << 10,
		HandshakeTimeout: cfg.HandshakeTimeout,
		Proxy:            http.ProxyFromEnvironment,
		TLSClientConfig:  cfg.TLSClientConfig,
		NetDialContext:   cfg.NetDialContext,
	}
	switch cfg.Protocol {
	case "", "auto", ProtocolV2:
		dialer.Subprotocols = []string{Subprotocol}
	case ProtocolV1:
	default:
		return nil, fmt.Errorf(`tunnel: protocol %q is not "auto", "v1" or "v2"`, cfg.Protocol)
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "sluice-agent"
	}
	ws, resp, err := dialer.DialContext(ctx, cfg.URL, http.Header{"User-Agent": {ua}})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("tunnel: connect to %s: %w (HTTP %s)", cfg.URL, err, resp.Status)
		}
		return nil, fmt.Errorf("tunnel: connect to %s: %w", cfg.URL, err)
	}
	s, err := register(ctx, ws, cfg)
	if err != nil {
		ws.Close()
		return nil, err
	}
	return s, nil
}

func register(ctx context.Context, ws *websocket.Conn, cfg DialConfig) (*AgentSession, error) {
	protocol := ProtocolV1
	if ws.Subprotocol() == Subprotocol {
		protocol = ProtocolV2
	}
	if cfg.Protocol == ProtocolV2 && protocol != ProtocolV2 {
		return nil, &RegisterError{Code: wire.CodeNoV2, Message: "the edge does not offer protocol v2 (use --protocol auto or v1)"}
	}
	features := cfg.Features
	if features == nil {
		features = wire.Features
	}
	// The handshake's deadline also ends it when ctx ends.
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	ws.SetWriteDeadline(deadline)
	ws.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { ws.SetReadDeadline(time.Now()) })
	defer stop()
	reg := wire.Frame{Type: wire.TypeRegister, TunnelID: cfg.TunnelID, AgentToken: cfg.Token, Features: features, RemotePort: cfg.RemotePort}
	if cfg.Type != wire.TunnelHTTP {
		reg.TunnelType = cfg.Type
	}
	if cfg.Pipe != nil && protocol == ProtocolV2 && (cfg.Type == "" || cfg.Type == wire.TunnelHTTP) {
		reg.Features = append(slices.Clip(reg.Features), wire.FeaturePipe)
	}
	if !cfg.Access.empty() {
		reg.Features = append(slices.Clip(reg.Features), wire.FeatureAccess)
		reg.BasicAuthUser, reg.BasicAuthBcrypt, reg.AllowCIDRs = cfg.Access.BasicAuthUser, cfg.Access.BasicAuthBcrypt, cfg.Access.AllowCIDRs
	}
	if err := ws.WriteMessage(websocket.TextMessage, wire.AppendFrame(nil, &reg, wire.EncodeOptions{})); err != nil {
		return nil, fmt.Errorf("tunnel: register: %w", err)
	}
	ws.SetReadLimit(maxRegisterSize)
	_, msg, err := ws.ReadMessage()
	if !stop() || ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("tunnel: register: no answer: %w", err)
	}
	ws.SetReadLimit(0)
	ws.SetReadDeadline(time.Time{})
	ws.SetWriteDeadline(time.Time{})
	var answer wire.Frame
	if err := wire.Decode(msg, &answer); err != nil {
		return nil, fmt.Errorf("tunnel: register: %w", err)
	}
	switch answer.Type {
	case wire.TypeRegistered:
	case wire.TypeError:
		return nil, &RegisterError{Code: answer.Code, Message: answer.Message}
	default:
		return nil, fmt.Errorf("tunnel: register: unexpected answer %q", answer.Type)
	}
	if !cfg.Access.empty() && !wire.HasFeature(answer.Features, wire.FeatureAccess) {
		return nil, &RegisterError{Code: wire.CodeNoAccess, Message: "the edge does not enforce visitor rules (basic auth, allowed networks): it is older than this agent; the tunnel was not opened"}
	}
	if cfg.Type == wire.TunnelTCP && !strings.HasPrefix(answer.PublicURL, "tcp://") {
		return nil, &RegisterError{Code: wire.CodeNoTCP, Message: "the edge does not offer TCP tunnels: it is older than this agent; the tunnel was not opened"}
	}
	if cfg.Type == wire.TunnelUDP && !strings.HasPrefix(answer.PublicURL, "udp://") {
		return nil, &RegisterError{Code: wire.CodeNoUDP, Message: "the edge does not offer UDP tunnels: it is older than this agent; the tunnel was not opened"}
	}
	d := dialers{tcp: cfg.DialTCP, udp: cfg.DialUDP, udpIdle: cmp.Or(cfg.UDPIdleTimeout, DefaultUDPIdleTimeout)}
	if protocol == ProtocolV2 && wire.HasFeature(answer.Features, wire.FeaturePipe) {
		d.pipe = cfg.Pipe
	}
	return &AgentSession{PublicURL: answer.PublicURL, Protocol: protocol, Features: answer.Features, window: answer.Window, ws: ws, cfg: cfg.Config, dial: d}, nil
}

// Serve serves the requests that arrive with handler until the connection
// fails or ctx ends, then returns once the handlers have returned: nil
// when ctx ended, a *PeerError when the edge sent an error frame (see
// wire.Final), the connection's failure otherwise.
func (s *AgentSession) Serve(ctx context.Context, handler http.Handler) error {
	if s.Protocol == ProtocolV2 {
		return serveV2(ctx, s.ws, handler, s.dial, s.cfg, &s.conn)
	}
	return serveV1(ctx, s.ws, handler, s.dial, v1Session(s.cfg, s.Features, s.window))
}

// Close closes a session that will not be served.
func (s *AgentSession) Close() error { return s.ws.Close() }
