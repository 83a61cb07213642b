package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ACMEConfig configures the edge's automatic certificates (ACME, through
// certmagic). The zero value turns ACME off; it is on when Email is set.
//
// What gets a certificate: the apex Domain, obtained when Serve starts;
// with a DNSProvider, *.Domain too, through DNS-01, which then serves
// every NAME.Domain; without one, NAME.Domain on demand (at the first TLS
// handshake that asks for it) when NAME is a tunnel online at this edge
// or stored in the store; and the custom hostnames that stored tunnels
// claim, on demand. An SNI name nobody claims gets no certificate and
// causes no ACME order. Certificates are renewed ahead of expiry and
// their OCSP responses stapled, by certmagic.
type ACMEConfig struct {
	// Email is the ACME account's contact address; setting it turns ACME on.
	Email string
	// CA is the ACME directory URL. Default Let's Encrypt's production
	// directory (certmagic.LetsEncryptProductionCA).
	CA string
	// CARoots are the roots trusted for the CA's HTTPS directory (a
	// private ACME server's). Nil means the system's roots.
	CARoots *x509.CertPool
	// Storage keeps certificates, keys and ACME accounts, so that a
	// restart reuses them. Nil means certmagic's default FileStorage
	// (under the user's data directory); sluice edge uses one under
	// --data DIR/certs.
	Storage certmagic.Storage
	// DNSProvider, if set, obtains *.Domain and Domain up front through
	// DNS-01 (it sets and clears the TXT records), so that tunnel names
	// need no certificate of their own.
	DNSProvider certmagic.DNSProvider
	// DNSResolvers are the DNS servers (host:port) certmagic asks to see
	// that a DNS-01 TXT record has propagated. Default the system's.
	DNSResolvers []string
	// DNSPropagationTimeout bounds that wait. Zero means certmagic's
	// default (2 min); negative skips the check.
	DNSPropagationTimeout time.Duration
	// HTTPAddr is the address of the listener given to ServeRedirect
	// (--http-listen), where the CA checks HTTP-01 challenges. Empty means
	// no HTTP-01: TLS-ALPN-01 only, on Serve's listener.
	HTTPAddr string
	// DisableTLSALPN turns TLS-ALPN-01 off (HTTP-01 only).
	DisableTLSALPN bool
	// RenewCheckInterval is how often certificates are checked for
	// renewal (and how close to expiry counts as urgent: five times
	// this). Default certmagic's, 10 min.
	RenewCheckInterval time.Duration
}

func (c *ACMEConfig) enabled() bool { return c.Email != "" }

// acme is the edge's certificate manager. The certificates live in one
// certmagic cache shared by two configurations: managed holds the apex
// (and with a DNS provider the wildcard), obtained when Serve starts and
// renewed on a timer; onDemand obtains the others at their first
// handshake, if allowCert says so, and renews them at handshakes.
type acme struct {
	cache    *certmagic.Cache
	managed  *certmagic.Config
	onDemand *certmagic.Config
	http     *certmagic.ACMEIssuer // answers HTTP-01 challenges (nil: off)
	tls      *tls.Config
	stopOnce sync.Once
}

// errNotClaimed refuses an on-demand certificate for a name nobody claims.
var errNotClaimed = errors.New("edge: acme: no tunnel claims this host name")

// startACME builds the certificate manager for the listener at tlsAddr
// and starts obtaining the managed names; s.ctx ends that work, Close
// stops the cache.
func (s *Server) startACME(tlsAddr net.Addr) *acme {
	c := s.cfg.ACME
	a := &acme{}
	logger := zap.New(slogCore{l: s.cfg.Logger.With("component", "acme")})
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(cert certmagic.Certificate) (*certmagic.Config, error) {
			for _, n := range cert.Names {
				if n == s.cfg.Domain || n == "*."+s.cfg.Domain {
					return a.managed, nil
				}
			}
			return a.onDemand, nil
		},
		RenewCheckInterval: c.RenewCheckInterval,
		Logger:             logger,
	})
	host, tlsPort := "", 443
	if tcp, ok := tlsAddr.(*net.TCPAddr); ok {
		tlsPort = tcp.Port
		if !tcp.IP.IsUnspecified() {
			host = tcp.IP.String()
		}
	}
	httpPort := 0
	if _, p, err := net.SplitHostPort(c.HTTPAddr); err == nil {
		httpPort, _ = strconv.Atoi(p)
	}
	// The issuers' challenge solvers must not open listeners of their
	// own: the edge's listeners answer (ListenHost and the Alt ports name
	// them, so certmagic finds them taken and relies on them).
	template := certmagic.ACMEIssuer{
		CA: c.CA, Email: c.Email, Agreed: true, TrustedRoots: c.CARoots,
		DisableHTTPChallenge: httpPort == 0, DisableTLSALPNChallenge: c.DisableTLSALPN,
		ListenHost: host, AltHTTPPort: httpPort, AltTLSALPNPort: tlsPort,
		Logger: logger,
	}
	if template.CA == "" {
		template.CA = certmagic.LetsEncryptProductionCA
	}
	newConfig := func(onDemand *certmagic.OnDemandConfig, iss certmagic.ACMEIssuer) (*certmagic.Config, *certmagic.ACMEIssuer) {
		cfg := certmagic.New(a.cache, certmagic.Config{
			Storage: c.Storage, OnDemand: onDemand, Logger: logger,
			DefaultServerName: s.cfg.Domain, OnEvent: s.acmeEvent,
		})
		ai := certmagic.NewACMEIssuer(cfg, iss)
		cfg.Issuers = []certmagic.Issuer{ai}
		return cfg, ai
	}
	a.onDemand, a.http = newConfig(&certmagic.OnDemandConfig{DecisionFunc: s.allowCert}, template)
	if httpPort == 0 {
		a.http = nil
	}
	names := []string{s.cfg.Domain}
	if c.DNSProvider != nil {
		dns := template
		dns.DNS01Solver = &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider: c.DNSProvider, Resolvers: c.DNSResolvers, PropagationTimeout: c.DNSPropagationTimeout,
		}}
		a.managed, _ = newConfig(nil, dns)
		names = []string{"*." + s.cfg.Domain, s.cfg.Domain}
	} else {
		a.managed, _ = newConfig(nil, template)
	}
	a.tls = a.onDemand.TLSConfig()
	a.tls.NextProtos = append([]string{"h2", "http/1.1"}, a.tls.NextProtos...)
	// The managed names' handshakes go to their own configuration, which
	// renews them on its timer with its own challenge (DNS-01 for the
	// wildcard); the on-demand one would renew what a handshake matched
	// in the cache as the name in SNI, with HTTP-01 or TLS-ALPN-01.
	a.tls.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
		label, under := strings.CutSuffix(name, "."+s.cfg.Domain)
		if c.DNSProvider != nil && (name == "" || name == s.cfg.Domain || under && !strings.Contains(label, ".")) {
			return a.managed.GetCertificate(hello) // until DNS-01 succeeds, none
		}
		if name == "" || name == s.cfg.Domain {
			if cert, err := a.managed.GetCertificate(hello); err == nil {
				return cert, nil
			}
			// The apex's first handshake may come before its certificate:
			// on demand it is (the storage's lock makes one order of both).
		}
		return a.onDemand.GetCertificate(hello)
	}
	if err := a.managed.ManageAsync(s.ctx, names); err != nil {
		s.cfg.Logger.Error("acme: managing certificates", "names", names, "err", err)
	}
	return a
}

// stop stops the cache's maintenance; the certificates' other work ends
// with s.ctx.
func (a *acme) stop() { a.stopOnce.Do(a.cache.Stop) }

// allowCert is the on-demand decision: a certificate is obtained for the
// apex, for NAME.Domain when NAME is a tunnel online here or stored (and
// no wildcard covers it), and for a custom hostname a stored tunnel
// claims; never for another name a client sends in SNI.
func (s *Server) allowCert(ctx context.Context, name string) error {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == s.cfg.Domain {
		return nil
	}
	if label, ok := strings.CutSuffix(name, "."+s.cfg.Domain); ok {
		if s.cfg.ACME.DNSProvider != nil || !ValidName(label) {
			return errNotClaimed // the wildcard serves it, or nothing can
		}
		if e := s.registry.lookup(label); e != nil && e.session != nil {
			return nil
		}
		if s.cfg.Store != nil {
			r, err := s.rules(ctx, label)
			if err != nil {
				return fmt.Errorf("edge: acme: %w", err)
			}
			if r.found {
				return nil
			}
		}
		return errNotClaimed
	}
	if _, ok, err := s.hostTunnel(ctx, name); err != nil {
		return fmt.Errorf("edge: acme: %w", err)
	} else if ok {
		return nil
	}
	return errNotClaimed
}

// acmeEvent logs what certmagic did with a certificate.
func (s *Server) acmeEvent(ctx context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		s.cfg.Logger.Info("acme: certificate obtained", "name", data["identifier"], "renewal", data["renewal"])
	case "cert_failed":
		s.cfg.Logger.Error("acme: certificate failed", "name", data["identifier"], "renewal", data["renewal"], "err", data["error"])
	case "cached_managed_cert":
		s.cfg.Logger.Debug("acme: certificate loaded", "names", data["sans"])
	}
	return nil
}

// ServeRedirect serves plain HTTP on ln until ctx ends: the ACME HTTP-01
// challenges (when ACMEConfig.HTTPAddr names ln), and for every other
// request a permanent redirect (308) to the same URL at the edge's public
// scheme and port (HTTPS, with ACME).
func (s *Server) ServeRedirect(ctx context.Context, ln net.Listener) error {
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := splitHostPort(r.Host)
		if host == "" {
			host = s.cfg.Domain
		}
		u := *r.URL
		u.Scheme, u.Host = "", ""
		w.Header().Set("Connection", "close")
		http.Redirect(w, r, s.publicURLOf(host)+u.RequestURI(), http.StatusPermanentRedirect)
	})
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if a := s.acmeReady(); a != nil && a.http != nil && a.http.HandleHTTPChallenge(w, r) {
				return
			}
			redirect(w, r)
		}),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	hs.Close()
	<-errc
	return nil
}

// serveACME starts the certificate manager (once) and returns ln serving
// TLS with its certificates: h2, http/1.1, and acme-tls/1 for TLS-ALPN-01.
func (s *Server) serveACME(ln net.Listener) net.Listener {
	s.acmeMu.Lock()
	if s.acme == nil {
		s.acme = s.startACME(ln.Addr())
	}
	a := s.acme
	s.acmeMu.Unlock()
	return tls.NewListener(ln, a.tls)
}

// acmeReady returns the certificate manager once Serve has started it.
func (s *Server) acmeReady() *acme {
	s.acmeMu.Lock()
	defer s.acmeMu.Unlock()
	return s.acme
}

// slogCore carries certmagic's zap logs to the edge's slog.Logger: zap's
// info (certmagic's chatty progress) becomes debug.
type slogCore struct {
	l     *slog.Logger
	attrs []any
}

func (c slogCore) level(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelDebug
	}
}

func (c slogCore) Enabled(l zapcore.Level) bool {
	return c.l.Enabled(context.Background(), c.level(l))
}

func (c slogCore) With(fields []zapcore.Field) zapcore.Core {
	return slogCore{l: c.l, attrs: append(append([]any(nil), c.attrs...), fieldAttrs(fields)...)}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	c.l.Log(context.Background(), c.level(e.Level), "acme: "+e.Message, append(append([]any(nil), c.attrs...), fieldAttrs(fields)...)...)
	return nil
}

func (slogCore) Sync() error { return nil }

func fieldAttrs(fields []zapcore.Field) []any {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, k, v)
	}
	return out
}
