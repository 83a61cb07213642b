package edge

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// The visitor's address, for the allowlists (and any per-client limit):
// the peer's address, unless the peer is one of Config.TrustedProxies (a
// load balancer in front of the edge). Then the address is taken from
// X-Forwarded-For (else Forwarded) as that proxy wrote it: read from the
// right, the first address that is not a trusted proxy. Only the entries
// written by trusted proxies are believed; what a visitor wrote further
// left never is.

// clientIP returns the visitor's address of r, as text ("" if the peer's
// address cannot be read).
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	if !s.trusted(peer) {
		return peer.String()
	}
	chain := forwardedFor(r.Header["X-Forwarded-For"])
	if len(chain) == 0 {
		chain = forwardedElements(r.Header["Forwarded"])
	}
	ip := peer
	for i := len(chain) - 1; i >= 0; i-- {
		a, ok := parseNode(chain[i])
		if !ok {
			break // a broken chain: believe no more of it
		}
		ip = a
		if !s.trusted(a) {
			break
		}
	}
	return ip.String()
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedFor splits X-Forwarded-For fields into their entries, in order.
func forwardedFor(values []string) []string {
	var out []string
	for _, v := range values {
		for e := range strings.SplitSeq(v, ",") {
			out = append(out, strings.TrimSpace(e))
		}
	}
	return out
}

// forwardedElements returns the for= values of Forwarded fields (RFC
// 7239), in order; an element without one gives "".
func forwardedElements(values []string) []string {
	var out []string
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			node := ""
			for pair := range strings.SplitSeq(elem, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(pair), "=")
				if strings.EqualFold(k, "for") {
					node = strings.Trim(val, `"`)
				}
			}
			out = append(out, node)
		}
	}
	return out
}

// parseNode reads an address as proxies write it: "192.0.2.1",
// "192.0.2.1:4711", "2001:db8::1" or "[2001:db8::1]:4711".
func parseNode(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}
