package dnsprovider_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/internal/bindtest"
	"github.com/sluicehq/sluice/internal/dnsprovider"
	"github.com/sluicehq/sluice/internal/pebbletest"
)

// TestDNS01Wildcard obtains *.sluice.test and sluice.test from Pebble,
// which validates DNS-01 by reading the TXT records from BIND, with
// certmagic's DNS01Solver driving each provider: RFC 2136 straight to
// BIND, and the exec hook (nsupdate). Both orders run at once, so two
// TXT records live at _acme-challenge.sluice.test together.
func TestDNS01Wildcard(t *testing.T) {
	ns := bindtest.Start(t, bindtest.Config{Zone: "sluice.test"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pb, err := pebbletest.Start(ctx, pebbletest.Config{DNSServer: ns.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Stop()

	for _, tc := range []struct {
		name string
		p    dnsprovider.Provider
	}{
		{"rfc2136", &dnsprovider.RFC2136{Server: ns.Addr, Key: key(ns.Key)}},
		{"exec", &dnsprovider.Exec{Command: ns.Hook(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(); err != nil {
				t.Fatal(err)
			}
			cache := certmagic.NewCache(certmagic.CacheOptions{
				GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return nil, fmt.Errorf("unused") },
				Logger:           zap.NewNop(),
			})
			defer cache.Stop()
			cfg := certmagic.New(cache, certmagic.Config{Storage: &certmagic.FileStorage{Path: t.TempDir()}, Logger: zap.NewNop()})
			cfg.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
				CA: pb.DirectoryURL, TrustedRoots: pb.CAPool, Email: "ops@sluice.test", Agreed: true,
				DisableHTTPChallenge: true, DisableTLSALPNChallenge: true,
				DNS01Solver: &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
					DNSProvider: tc.p, Resolvers: []string{ns.Addr}, PropagationTimeout: time.Minute,
				}},
				Logger: zap.NewNop(),
			})}
			names := []string{"*.sluice.test", "sluice.test"}
			var wg sync.WaitGroup
			errs := make([]error, len(names))
			for i, name := range names {
				wg.Go(func() { errs[i] = cfg.ObtainCertSync(ctx, name) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("obtain %s: %v\nPebble:\n%s", names[i], err, pb.Output())
				}
			}
			for _, name := range names {
				c, err := cfg.CacheManagedCertificate(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				inter := x509.NewCertPool()
				for _, der := range c.Certificate.Certificate[1:] {
					ic, err := x509.ParseCertificate(der)
					if err != nil {
						t.Fatal(err)
					}
					inter.AddCert(ic)
				}
				host := strings.Replace(name, "*", "demo", 1) // a tunnel's name under the wildcard
				if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pb.IssuerPool, Intermediates: inter}); err != nil {
					t.Errorf("%s: the certificate for %s (%v) does not verify: %v", name, host, c.Leaf.DNSNames, err)
				}
			}
			// The challenges' records are cleared.
			assertTXT(t, ns, "_acme-challenge")
		})
	}
}
