package edge

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/tunnel"
)

// What the edge changes in the headers that cross it, besides the
// hop-by-hop fields (removed by httputil.ReverseProxy) and the forwarding
// fields: the tunnel's own Sluice-* fields never come from a visitor nor
// reach one, the Host an upstream sees has one spelling, and a tunnel
// cannot set cookies for the apex or for the other tunnels.

// forwardHost is the Host forwarded for a tunnel reached at host (its
// NAME.DOMAIN or custom hostname, see publicHost) when the visitor sent
// inHost: host in lowercase, without a trailing dot, with the port the
// visitor gave unless it is the default port of the edge's public scheme
// (so "Demo.Example.com.:443" reaches the upstream of an https edge as
// "demo.example.com").
func (s *Server) forwardHost(host, inHost string) string {
	_, port, ok := splitHostPort(inHost)
	if !ok {
		return host
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || n == defaultPort(s.cfg.PublicScheme) {
		return host
	}
	return host + ":" + strconv.Itoa(n)
}

// splitHostPort is net.SplitHostPort for a Host field, which may have no
// port: ok is false, and host all of hostport, when it has none or does
// not parse. Most Host fields have no port, and SplitHostPort's error for
// them would be an allocation per request, so a colon is looked for first.
func splitHostPort(hostport string) (host, port string, ok bool) {
	if strings.IndexByte(hostport, ':') < 0 {
		return hostport, "", false
	}
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport, "", false
	}
	return h, p, true
}

func defaultPort(scheme string) int {
	if scheme == "https" {
		return 443
	}
	return 80
}

// cleanResponse removes the tunnel's own fields from a response for a
// visitor of host (NAME.DOMAIN or a custom hostname) and keeps its cookies
// to that host.
func cleanResponse(resp *http.Response, host string) {
	tunnel.RemoveInternal(resp.Header)
	tunnel.RemoveInternal(resp.Trailer)
	if vv := resp.Header["Set-Cookie"]; len(vv) > 0 {
		resp.Header["Set-Cookie"] = scopeCookies(vv, host)
	}
}

// scopeCookies returns the Set-Cookie values of a response for host, with
// no cookie that a browser would send to another host of the edge (cookie
// tossing, RFC 6265 section 8.6): a Domain attribute naming host itself
// is kept; one naming a parent of host (the apex, or above) would reach
// every tunnel, and is removed, which leaves a host-only cookie; a cookie
// whose Domain names any other host is dropped (browsers refuse it from
// host anyway). Other values are kept byte for byte.
func scopeCookies(values []string, host string) []string {
	out := values[:0:0]
	for _, v := range values {
		if v, ok := scopeCookie(v, host); ok {
			out = append(out, v)
		}
	}
	return out
}

func scopeCookie(v, host string) (string, bool) {
	parts := strings.Split(v, ";")
	keep := parts[:1]
	narrowed := false
	for _, attr := range parts[1:] {
		name, val, _ := strings.Cut(attr, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "domain") {
			keep = append(keep, attr)
			continue
		}
		d := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(val), "."), "."))
		switch {
		case d == "" || d == host:
			keep = append(keep, attr)
		case strings.HasSuffix(host, "."+d):
			narrowed = true // the apex or a parent: host-only instead
		default:
			return "", false
		}
	}
	if !narrowed {
		return v, true
	}
	return strings.Join(keep, ";"), true
}
