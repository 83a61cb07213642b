package dnsprovider

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// TSIGKey is a TSIG key (RFC 8945) that signs updates: the key's name as
// the server knows it, its algorithm and its secret.
type TSIGKey struct {
	Name      string // such as "sluice-acme" (made absolute when used)
	Algorithm string // such as "hmac-sha256" (see Algorithms)
	Secret    string // base64, as in the server's key file
}

// Algorithms are the TSIG algorithms a key may use, by the names BIND,
// Knot and PowerDNS give them. hmac-md5 is not among them (miekg/dns no
// longer signs with it).
var Algorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// ParseTSIGKey reads a key written NAME:ALGORITHM:SECRET, such as
// "sluice-acme:hmac-sha256:c2VjcmV0...". The order of nsupdate -y,
// ALGORITHM:NAME:SECRET, is taken too.
func ParseTSIGKey(s string) (TSIGKey, error) {
	parts := strings.SplitN(strings.TrimSpace(s), ":", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return TSIGKey{}, fmt.Errorf("dnsprovider: TSIG key: want NAME:ALGORITHM:SECRET, such as sluice-acme:hmac-sha256:BASE64 (the secret from the server's key file)")
	}
	k := TSIGKey{Name: parts[0], Algorithm: strings.ToLower(parts[1]), Secret: parts[2]}
	if _, ok := algorithm(k.Algorithm); !ok {
		if _, ok := algorithm(k.Name); ok { // nsupdate -y order
			k.Name, k.Algorithm = parts[1], strings.ToLower(parts[0])
		}
	}
	return k, k.Validate()
}

// Validate reports a key that cannot sign: an unknown algorithm, a name
// that is not a domain name, a secret that is not base64.
func (k TSIGKey) Validate() error {
	if _, ok := dns.IsDomainName(k.Name); !ok || k.Name == "" {
		return fmt.Errorf("dnsprovider: TSIG key: %q is not a key name", k.Name)
	}
	if _, ok := algorithm(k.Algorithm); !ok {
		return fmt.Errorf("dnsprovider: TSIG key %s: algorithm %q is not one of hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512", k.Name, k.Algorithm)
	}
	if b, err := base64.StdEncoding.DecodeString(k.Secret); err != nil || len(b) == 0 {
		return fmt.Errorf("dnsprovider: TSIG key %s: the secret is not base64 (copy it from the server's key file, such as tsig-keygen's output)", k.Name)
	}
	return nil
}

// algorithm returns miekg/dns's name for a, given with or without its
// final dot.
func algorithm(a string) (string, bool) {
	v, ok := Algorithms[strings.TrimSuffix(strings.ToLower(a), ".")]
	return v, ok
}
