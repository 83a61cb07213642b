package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/internal/inspect"
	"github.com/sluicehq/sluice/sse"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// ManagedConfig configures a remotely managed agent: it serves the tunnels
// the edge's store lists for its token, each to the upstream stored with
// it, and follows changes pushed by the edge.
type ManagedConfig struct {
	// Edge is the edge's URL; Token an agent token of its store.
	Edge  string
	Token string
	// Protocol is each tunnel's protocol: "auto" (default), "v1" or "v2".
	Protocol string
	// Session configures the tunnel sessions.
	Session tunnel.Config
	// UpstreamInsecure and UpstreamCA apply to every tunnel with an
	// https:// upstream (see Config).
	UpstreamInsecure bool
	UpstreamCA       []byte
	// TLSClientConfig, if set, is used for the tunnels' connections to an
	// https:// edge (see Config), and for the config and push requests
	// when HTTPClient is nil.
	TLSClientConfig *tls.Config
	// HTTPClient makes the config and push requests. Nil means a client
	// with no total timeout (the push channel is a stream).
	HTTPClient *http.Client
	// Logger receives the agent's logs. Nil discards.
	Logger *slog.Logger
	// Console, if set, gets one line per request, as for sluice http.
	Console io.Writer
	// Inspector, if set, records the requests of every HTTP tunnel (see
	// Config.Inspector); Handler serves its replays.
	Inspector *inspect.Inspector
	// Status, if set, gets one line per change: tunnels started, changed
	// and stopped, the push channel's state.
	Status func(line string)
	// UserAgent is sent with the tunnels' WebSocket handshakes (see
	// Config.UserAgent).
	UserAgent string
}

// ErrTokenRevoked ends a managed agent whose token the edge revoked.
var ErrTokenRevoked = errors.New("agent: the edge revoked this agent's token")

// Managed is a remotely managed agent. NewManaged does no I/O; Run blocks.
type Managed struct {
	cfg     ManagedConfig
	client  *api.Client // the config and push requests
	mu      sync.Mutex
	running map[string]*managedTunnel // tunnels being served, or waiting to retry
	refused map[string]*refusal       // tunnels the edge refused or retired, by name
	fatal   error                     // what ends Run, set once by fail
	stop    context.CancelFunc        // ends Run; set by Run
	wg      sync.WaitGroup
}

type managedTunnel struct {
	agent    *Agent
	cancel   context.CancelFunc
	typ      string // wire.TunnelHTTP or wire.TunnelTCP
	upstream string
	host     string
	port     int // a TCP tunnel's remote port
}

// refusal is a tunnel the edge refused (tunnel_taken and the like) or
// retired: it is started again at the next config or push event, with
// backoff (retryBackoff) so that two agents that want the same name do not
// take it from each other in a loop.
type refusal struct {
	failures int
	retryAt  time.Time
}

// retryBackoff spaces the retries of a refused tunnel.
var retryBackoff = sse.Backoff{Initial: time.Second, Max: 30 * time.Second}

// NewManaged checks cfg and returns a managed agent.
func NewManaged(cfg ManagedConfig) (*Managed, error) {
	if _, err := api.ParseURL(cfg.Edge); err != nil {
		return nil, fmt.Errorf("agent: edge %w", err)
	}
	if cfg.Token == "" {
		return nil, errors.New("agent: no token")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = cfg.TLSClientConfig.Clone() // the transport adds "h2" to it
		cfg.HTTPClient = &http.Client{Transport: t}
	}
	if cfg.Status == nil {
		cfg.Status = func(string) {}
	}
	client, err := api.NewClient(cfg.Edge, cfg.Token, cfg.HTTPClient)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return &Managed{cfg: cfg, client: client, running: make(map[string]*managedTunnel), refused: make(map[string]*refusal)}, nil
}

// Run serves the configured tunnels until ctx ends (nil) or the token is
// revoked or refused, or the edge's certificate fails verification (a
// *CertError: at once for the first config request, after CertAttempts
// tries for the push channel and the tunnels). The push channel
// reconnects with backoff; after every (re)connection the config is
// fetched again, since events may have been missed.
func (m *Managed) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	m.mu.Lock()
	m.stop = cancel
	m.mu.Unlock()
	defer func() {
		cancel()
		m.wg.Wait()
	}()
	cfg, err := m.fetch(ctx)
	if err != nil {
		return err
	}
	m.reconcile(ctx, cfg)
	push := m.client.PushURL(cfg)
	if push != cfg.PushURL && cfg.PushURL != "" {
		m.cfg.Logger.Debug("push_url not on the host of --edge: the token is not sent there", "push_url", cfg.PushURL, "using", push)
	}
	preq, err := m.client.NewPushRequest(ctx, push)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	certFailures := 0 // push connections in a row that failed on the certificate
	client, err := sse.NewClient(push, sse.ClientConfig{
		HTTPClient:  m.cfg.HTTPClient,
		Header:      preq.Header,
		IdleTimeout: time.Minute, // the edge sends keepalives every 15 s by default
		Retry:       time.Second, // back soon after an edge restart; failures back off
		OnConnect: func(*http.Response) {
			certFailures = 0
			m.cfg.Status("push channel connected")
			if cfg, err := m.fetch(ctx); err == nil {
				m.reconcile(ctx, cfg)
			} else if isFatal(err) {
				m.fail(err)
			}
		},
		OnRetry: func(err error, delay time.Duration) {
			if !IsCertError(err) {
				certFailures = 0
			} else if certFailures++; certFailures >= CertAttempts {
				m.fail(&CertError{Edge: m.cfg.Edge, Attempts: certFailures, Err: err})
				return
			}
			m.cfg.Status(fmt.Sprintf("push channel lost (%v); reconnecting in %v", err, delay.Round(time.Millisecond)))
		},
	})
	if err != nil {
		return fmt.Errorf("agent: push channel: %w", err)
	}
	// The standard makes a non-200 answer fatal to an event stream; for
	// the push channel only a refused token is: anything else (an edge
	// restarting behind a proxy that answers 502) is retried here, with
	// the same backoff as the client's.
	backoff := sse.Backoff{Initial: 2 * time.Second}
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := m.listen(ctx, client)
		if err == nil || ctx.Err() != nil {
			break
		}
		var se *sse.StatusError
		if errors.Is(err, ErrTokenRevoked) || isFatal(err) {
			return err
		}
		if errors.As(err, &se) && (se.StatusCode == http.StatusUnauthorized || se.StatusCode == http.StatusForbidden) {
			return fmt.Errorf("agent: the edge refused the token on the push channel: %w", err)
		}
		if backoff.Healthy(time.Since(start)) {
			failures = 0
		}
		failures++
		delay := backoff.Delay(failures)
		m.cfg.Status(fmt.Sprintf("push channel failed (%v); retrying in %v", err, delay.Round(time.Millisecond)))
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fatal
}

// fail ends Run with err, unless something else ended it first.
func (m *Managed) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fatal == nil {
		m.fatal = err
	}
	m.stop()
}

// listen follows the push channel until it fails for good (the error),
// the token is revoked (ErrTokenRevoked) or ctx ends (nil).
func (m *Managed) listen(ctx context.Context, client *sse.Client) error {
	for ev, err := range client.Events(ctx) {
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch ev.Type {
		case api.EventConfigChanged, api.EventTunnelDeleted:
			m.cfg.Logger.Info("push event", "type", ev.Type, "data", ev.Data)
			if cfg, err := m.fetch(ctx); err == nil {
				m.reconcile(ctx, cfg)
			} else if isFatal(err) {
				return err
			}
		case api.EventTokenRevoked:
			m.cfg.Status("token revoked by the edge: stopping")
			return ErrTokenRevoked
		}
	}
	return nil
}

// authError is a config request the edge refused (401 or 403).
type authError struct{ msg string }

func (e *authError) Error() string { return e.msg }

// isFatal reports whether err ends the managed agent: a refused token, or
// an edge certificate that failed verification.
func isFatal(err error) bool {
	var ae *authError
	var ce *CertError
	return errors.As(err, &ae) || errors.As(err, &ce)
}

// fetch gets the agent's config. A refused token is an *authError.
func (m *Managed) fetch(ctx context.Context) (api.AgentConfig, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cfg, err := m.client.AgentConfig(ctx)
	var ae *api.Error
	switch {
	case err == nil:
		return cfg, nil
	case IsCertError(err):
		return cfg, &CertError{Edge: m.cfg.Edge, Attempts: 1, Err: err}
	case !errors.As(err, &ae) || (ae.Status != http.StatusUnauthorized && ae.Status != http.StatusForbidden):
		return cfg, fmt.Errorf("agent: config: %w", err)
	case ae.Code == api.CodeTokenRevoked:
		return cfg, &authError{msg: ErrTokenRevoked.Error()}
	default:
		return cfg, &authError{msg: fmt.Sprintf("agent: the edge refused the token: %s (%d %s)", ae.Message, ae.Status, http.StatusText(ae.Status))}
	}
}

// reconcile starts the tunnels that are new, points changed ones at their
// new upstream (without reconnecting: streams in flight go on), and stops
// the ones that are gone or disabled. Unchanged tunnels are not touched. A
// tunnel the edge refused is started again, after its backoff delay.
func (m *Managed) reconcile(ctx context.Context, cfg api.AgentConfig) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]api.AgentTunnel{}
	for _, t := range cfg.Tunnels {
		if t.Enabled {
			want[t.Name] = t
		}
	}
	for name, r := range m.running {
		if _, ok := want[name]; !ok {
			r.cancel()
			delete(m.running, name)
			m.cfg.Status("stopped " + name)
		}
	}
	for name := range m.refused {
		if _, ok := want[name]; !ok {
			delete(m.refused, name)
		}
	}
	for name, t := range want {
		typ := cmp.Or(t.Type, wire.TunnelHTTP)
		var up *url.URL
		var local string // a TCP tunnel's local HOST:PORT
		var err error
		switch typ {
		case wire.TunnelHTTP:
			up, err = api.ParseUpstream(t.Upstream)
		case wire.TunnelTCP:
			local, err = api.ParseTCPUpstream(t.Upstream)
		default:
			m.cfg.Logger.Warn("tunnel of an unknown type skipped", "tunnel", name, "type", typ)
			continue
		}
		if err != nil {
			m.cfg.Logger.Warn("tunnel with a bad upstream skipped", "tunnel", name, "err", "upstream "+err.Error())
			continue
		}
		if r := m.running[name]; r != nil {
			switch {
			case r.typ != typ || typ == wire.TunnelTCP && (r.upstream != t.Upstream || r.port != t.RemotePort):
				// A TCP tunnel's local address and port are its
				// registration's: register again.
				r.cancel()
				delete(m.running, name)
				m.cfg.Status(fmt.Sprintf("%s changed: registering again", name))
			case r.upstream != t.Upstream || r.host != t.HostHeader:
				r.agent.SetUpstream(up, t.HostHeader)
				r.upstream, r.host = t.Upstream, t.HostHeader
				m.cfg.Status(fmt.Sprintf("%s now -> %s", name, t.Upstream))
				continue
			default:
				continue
			}
		}
		target := t.Upstream
		if typ == wire.TunnelTCP {
			target = local
		}
		a, err := New(Config{
			Edge: m.cfg.Edge, Token: m.cfg.Token, Name: name, Type: typ, Upstream: up, HostHeader: t.HostHeader,
			LocalAddr: local, RemotePort: t.RemotePort,
			UpstreamInsecure: m.cfg.UpstreamInsecure, UpstreamCA: m.cfg.UpstreamCA,
			Protocol: m.cfg.Protocol, Session: m.cfg.Session, Logger: m.cfg.Logger.With("tunnel", name), Console: m.cfg.Console,
			Inspector: m.cfg.Inspector,
			UserAgent: m.cfg.UserAgent, TLSClientConfig: m.cfg.TLSClientConfig,
			OnConnect: func(public, protocol string) {
				m.cfg.Status(fmt.Sprintf("Forwarding %s -> %s (protocol %s)", public, target, protocol))
			},
		})
		if err != nil {
			m.cfg.Logger.Warn("tunnel not started", "tunnel", name, "err", err)
			continue
		}
		var wait time.Duration
		if r := m.refused[name]; r != nil {
			wait = time.Until(r.retryAt)
			m.cfg.Status(fmt.Sprintf("retrying %s in %v", name, max(wait, 0).Round(time.Millisecond)))
		}
		tctx, tcancel := context.WithCancel(ctx)
		mt := &managedTunnel{agent: a, cancel: tcancel, typ: typ, upstream: t.Upstream, host: t.HostHeader, port: t.RemotePort}
		m.running[name] = mt
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer tcancel()
			if wait > 0 {
				timer := time.NewTimer(wait)
				select {
				case <-tctx.Done():
					timer.Stop()
					return
				case <-timer.C:
				}
			}
			start := time.Now()
			err := a.Run(tctx)
			if err == nil || tctx.Err() != nil {
				return
			}
			var ce *CertError
			if errors.As(err, &ce) {
				m.fail(err) // every tunnel dials the same edge: stop them all
				return
			}
			m.refuse(name, mt, time.Since(start))
			m.cfg.Status(fmt.Sprintf("%s stopped: %v (retried at the next config change)", name, err))
		}()
	}
}

// Handler serves a request with the handler of the tunnel it was sent
// to: the one named by the first label of its Host (NAME.DOMAIN), else the
// only HTTP tunnel running; 502 if none. The inspector's replays go here
// (inspect.HandlerConfig.Upstream).
func (m *Managed) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, _, _ := strings.Cut(r.Host, ".")
		m.mu.Lock()
		var h http.Handler
		if t := m.running[strings.ToLower(name)]; t != nil && t.typ == wire.TunnelHTTP {
			h = t.agent.Handler()
		} else {
			var only []*managedTunnel
			for _, t := range m.running {
				if t.typ == wire.TunnelHTTP {
					only = append(only, t)
				}
			}
			if len(only) == 1 {
				h = only[0].agent.Handler()
			}
		}
		m.mu.Unlock()
		if h == nil {
			http.Error(w, fmt.Sprintf("sluice agent: no tunnel of this agent serves %q", r.Host), http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refuse records that the edge refused or retired tunnel name (served by
// mt for up): mt is no longer running, and the next reconcile starts the
// tunnel again once its backoff delay has passed.
func (m *Managed) refuse(name string, mt *managedTunnel, up time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running[name] != mt {
		return // stopped or replaced by reconcile meanwhile
	}
	delete(m.running, name)
	r := m.refused[name]
	if r == nil || retryBackoff.Healthy(up) {
		r = &refusal{}
		m.refused[name] = r
	}
	r.failures++
	r.retryAt = time.Now().Add(retryBackoff.Delay(r.failures))
}
