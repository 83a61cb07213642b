package main

import (
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/caddyserver/certmagic"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/cli"
)

// acmeHelp is the part of sluice edge --help about automatic TLS.
const acmeHelp = `
Automatic TLS (ACME) is on when --acme-email is given: the edge serves
HTTPS on --listen with certificates from --acme-ca (Let's Encrypt by
default), kept under --data DIR/certs so that a restart reuses them, and
renewed ahead of expiry. The apex DOMAIN gets its certificate at start;
NAME.DOMAIN gets one at the first visit when NAME is a stored tunnel or a
tunnel online at this edge, never for names nobody registered. Without a
DNS provider, each tunnel name is its own certificate: each new name is an
ACME order (Let's Encrypt allows 50 new certificates per registered domain
per week) and is published in Certificate Transparency logs, so the names
of your tunnels become public. --http-listen serves the HTTP-01 challenges
and redirects plain HTTP to HTTPS; TLS-ALPN-01 is answered on --listen.

  sluice edge --listen :443 --http-listen :80 --domain example.com \
    --data /var/lib/sluice --admin-token A --acme-email ops@example.com
`

// acmeFlags are sluice edge's ACME flags.
type acmeFlags struct {
	email, ca, caRoot, httpListen *string
}

func addACMEFlags(fs *flag.FlagSet) *acmeFlags {
	return &acmeFlags{
		email:      fs.String("acme-email", "", "turn on automatic TLS (ACME): certificates for DOMAIN and the tunnels' names, with this contact address for the CA's account (default off)"),
		ca:         fs.String("acme-ca", certmagic.LetsEncryptProductionCA, "ACME directory URL of the CA"),
		caRoot:     fs.String("acme-ca-root", "", "PEM file of roots to trust for the ACME directory's HTTPS, besides the system's (a private CA such as a test one; default none)"),
		httpListen: fs.String("http-listen", "", "address for plain HTTP: ACME HTTP-01 challenges, and a redirect to HTTPS for everything else (default none: TLS-ALPN-01 only)"),
	}
}

// configure sets cfg.ACME from the flags; dataDir is --data, tlsFiles
// whether --tls-cert was given.
func (f *acmeFlags) configure(cfg *edge.Config, dataDir string, tlsFiles bool) error {
	if *f.email == "" {
		if *f.caRoot != "" || *f.ca != certmagic.LetsEncryptProductionCA {
			return cli.Usagef("edge: --acme-ca and --acme-ca-root need --acme-email (which turns ACME on)")
		}
		if *f.httpListen != "" && !tlsFiles {
			return cli.Usagef("edge: --http-listen redirects to HTTPS: it needs --acme-email or --tls-cert")
		}
		return nil
	}
	if tlsFiles {
		return cli.Usagef("edge: --acme-email gets certificates by ACME; --tls-cert/--tls-key bring one: give one or the other")
	}
	cfg.PublicScheme = "https"
	cfg.ACME.Email = *f.email
	cfg.ACME.CA = *f.ca
	if *f.caRoot != "" {
		pem, err := os.ReadFile(*f.caRoot)
		if err != nil {
			return fmt.Errorf("edge: --acme-ca-root: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("edge: --acme-ca-root: no PEM certificate in %s", *f.caRoot)
		}
		cfg.ACME.CARoots = pool
	}
	if dataDir != "" {
		cfg.ACME.Storage = &certmagic.FileStorage{Path: filepath.Join(dataDir, "certs")}
	}
	return nil
}
