package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// ErrNoPEM is a CA file (--ca, --upstream-ca) without a PEM certificate.
var ErrNoPEM = errors.New("agent: no PEM certificate in the CA file")

// CertAttempts is how many connections in a row an agent tries while the
// edge's certificate fails verification before it stops with a
// *CertError: a certificate that is not trusted, not for the edge's name,
// or expired does not fix itself like a lost connection does, but a few
// tries ride out an edge that is swapping its certificate.
const CertAttempts = 3

// CertError ends an agent whose edge's certificate failed verification
// CertAttempts times in a row. Its message says what to fix; Err is the
// last verification error.
type CertError struct {
	Edge     string // the edge's URL
	Attempts int    // connections tried
	Err      error
}

func (e *CertError) Error() string {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		msg string
	)
	switch {
	case errors.As(e.Err, &ua):
		msg = "the edge's certificate is not trusted: it is signed by an authority this machine does not know; give that CA's certificate (PEM) with --ca FILE, or use a certificate from a public CA at the edge"
	case errors.As(e.Err, &he):
		msg = fmt.Sprintf("the edge's certificate is not valid for %s (%s); give the edge's name as its certificate has it in --edge, or fix the certificate at the edge", he.Host, certNames(he.Certificate))
	case errors.As(e.Err, &ci) && ci.Reason == x509.Expired:
		msg = "the edge's certificate has expired or is not valid yet; renew it at the edge (or check this machine's clock)"
	default:
		msg = "the edge's certificate failed verification; give its CA with --ca FILE, or fix the certificate at the edge"
	}
	return fmt.Sprintf("agent: %s (%s, %s: %v)", msg, e.Edge, plural(e.Attempts, "attempt"), e.Err)
}

func (e *CertError) Unwrap() error { return e.Err }

// certNames lists the names a certificate is valid for, for a message.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	names := append([]string{}, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "it names no host"
	}
	return "it is for " + strings.Join(names, ", ")
}

// IsCertError reports whether err is a failed verification of a server's
// certificate (the edge's), as opposed to a connection that could succeed
// if tried again.
func IsCertError(err error) bool {
	var (
		cv *tls.CertificateVerificationError
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
	)
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

// plural is "1 attempt" or "3 attempts".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
