package pebbletest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/acme"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Pebble issues a certificate for a made-up name after validating HTTP-01
// for real: it resolves the name through the DNS helper and fetches the
// token from the port the test gave; the certificate chains to IssuerPool,
// and Orders counts the order. A name whose challenge nobody answers is
// refused.
func TestPebbleIssuesAfterRealHTTP01(t *testing.T) {
	d, err := StartDNS()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := Start(ctx, Config{HTTPPort: ln.Addr().(*net.TCPAddr).Port, TLSPort: 1, DNSServer: d.Addr, Validity: time.Hour})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	defer p.Stop()

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cl := &acme.Client{Key: key, DirectoryURL: p.DirectoryURL, HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.CAPool}}}}
	defer cl.HTTPClient.CloseIdleConnections()
	if _, err := cl.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatal(err)
	}
	var answers sync.Map // path -> key authorization
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, ok := answers.Load(r.URL.Path); ok && strings.HasPrefix(r.Host, "good.") {
			w.Write([]byte(a.(string)))
			return
		}
		http.NotFound(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	order := func(name string) (*acme.Order, error) {
		o, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(name))
		if err != nil {
			return nil, err
		}
		for _, u := range o.AuthzURLs {
			z, err := cl.GetAuthorization(ctx, u)
			if err != nil {
				return nil, err
			}
			for _, c := range z.Challenges {
				if c.Type != "http-01" {
					continue
				}
				a, _ := cl.HTTP01ChallengeResponse(c.Token)
				answers.Store(cl.HTTP01ChallengePath(c.Token), a)
				if _, err := cl.Accept(ctx, c); err != nil {
					return nil, err
				}
			}
			if _, err := cl.WaitAuthorization(ctx, u); err != nil {
				return nil, err
			}
		}
		return cl.WaitOrder(ctx, o.URI)
	}
	o, err := order("good.example.test")
	if err != nil {
		t.Fatalf("order: %v\n%s", err, p.Output())
	}
	csrKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"good.example.test"}}, crypto.Signer(csrKey))
	der, _, err := cl.CreateCertFromOrder(ctx, o, csr, true)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der[0])
	inter := x509.NewCertPool()
	for _, c := range der[1:] {
		ic, _ := x509.ParseCertificate(c)
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "good.example.test", Roots: p.IssuerPool, Intermediates: inter}); err != nil {
		t.Fatalf("certificate does not chain to the issuing root: %v", err)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > time.Hour {
		t.Fatalf("lifetime %v, want at most the configured hour", life)
	}
	if !strings.Contains(p.Output(), "Attempting to validate w/ HTTP: http://good.example.test:"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)) {
		t.Fatalf("no HTTP validation logged:\n%s", p.Output())
	}

	if _, err := order("bad.example.test"); err == nil {
		t.Fatal("an unanswered challenge was validated")
	}
	if n := p.Orders(); n != 2 {
		t.Fatalf("Orders() = %d, want 2", n)
	}
}
