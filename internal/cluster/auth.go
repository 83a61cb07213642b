package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header carries the signature of a request forwarded between edges:
//
//	Sluice-Cluster: v1;t=UNIXSECONDS;e=EDGEID;a=VISITOR-ADDR;s=SCHEME;m=MAC
//
// where a is the visitor's address as the first edge saw it (its
// RemoteAddr), s the scheme the visitor used (http or https), and m the
// base64url HMAC-SHA256, under the cluster secret, of those fields and of
// the request's method, Host and request URI. The name starts with
// tunnel.InternalPrefix, so the receiving edge's proxy never passes it on
// to an agent, and no visitor's field of that name crosses an edge.
const Header = "Sluice-Cluster"

// MaxSkew is how far a signature's time may be from the receiver's clock.
const MaxSkew = time.Minute

// Forwarded is what a valid signature says about a forwarded request.
type Forwarded struct {
	From       string // the forwarding edge's id
	RemoteAddr string // the visitor's address (host:port) at that edge
	TLS        bool   // the visitor came over https
}

// Sign sets Header on req, the request to send to another edge, for the
// visitor at remoteAddr (its RemoteAddr at this edge) who used TLS or not.
// req's Host and URL must be final.
func (c *Cluster) Sign(req *http.Request, remoteAddr string, tls bool) {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	t := strconv.FormatInt(time.Now().Unix(), 10)
	uri := req.URL.RequestURI()
	mac := c.mac(t, c.cfg.ID, remoteAddr, scheme, req.Method, req.Host, uri)
	req.Header.Set(Header, "v1;t="+t+";e="+c.cfg.ID+";a="+remoteAddr+";s="+scheme+";m="+mac)
}

// Verify checks the Header of r, a request another edge forwarded, and
// returns what it says; ErrBadSignature if it is malformed, more than
// MaxSkew away from now, or not signed with the cluster secret (compared
// in constant time).
func (c *Cluster) Verify(r *http.Request) (Forwarded, error) {
	vv := r.Header.Values(Header)
	if len(vv) != 1 {
		return Forwarded{}, fmt.Errorf("%w: %d %s fields", ErrBadSignature, len(vv), Header)
	}
	fields := map[string]string{}
	parts := strings.Split(vv[0], ";")
	if parts[0] != "v1" {
		return Forwarded{}, fmt.Errorf("%w: version %q", ErrBadSignature, parts[0])
	}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return Forwarded{}, fmt.Errorf("%w: field %q", ErrBadSignature, p)
		}
		fields[k] = v
	}
	t, e, a, s, m := fields["t"], fields["e"], fields["a"], fields["s"], fields["m"]
	if len(fields) != 5 || e == "" || a == "" || (s != "http" && s != "https") || m == "" {
		return Forwarded{}, fmt.Errorf("%w: fields %q", ErrBadSignature, vv[0])
	}
	sec, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return Forwarded{}, fmt.Errorf("%w: time %q", ErrBadSignature, t)
	}
	if d := time.Since(time.Unix(sec, 0)); d > MaxSkew || d < -MaxSkew {
		return Forwarded{}, fmt.Errorf("%w: signed %v from now (clocks apart?)", ErrBadSignature, -d.Round(time.Second))
	}
	want := c.mac(t, e, a, s, r.Method, r.Host, r.RequestURI)
	if !hmac.Equal([]byte(m), []byte(want)) {
		return Forwarded{}, fmt.Errorf("%w: wrong MAC", ErrBadSignature)
	}
	return Forwarded{From: e, RemoteAddr: a, TLS: s == "https"}, nil
}

func (c *Cluster) mac(fields ...string) string {
	h := hmac.New(sha256.New, c.cfg.Secret)
	h.Write([]byte("sluice-cluster-v1"))
	for _, f := range fields {
		h.Write([]byte{0})
		h.Write([]byte(f))
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
