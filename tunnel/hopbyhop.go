package tunnel

import (
	"net/http"
	"strings"
)

// hopHeaders are the hop-by-hop fields of RFC 9110, section 7.6.1, and the
// older ones that net/http/httputil.ReverseProxy also removes: they
// describe one connection and are never forwarded.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection", // non-standard, sent by some old clients
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",      // canonical form of "TE"
	"Trailer", // the announcement; trailers themselves pass
	"Transfer-Encoding",
	"Upgrade",
}

// ForwardingHeaders are the fields that say which client a request came
// from and how: the edge's Proxy removes the visitor's and the edge sets
// its own; the agent's proxy and the cluster's forwarder pass the edge's
// on.
var ForwardingHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// RemoveHopByHop deletes from h the hop-by-hop fields and every field that
// Connection names, as httputil.ReverseProxy does, on both of the tunnel's
// proxies (Proxy). The upgrade path, which copies a raw 101 head by hand, uses it
// so that the same rule holds there.
func RemoveHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		delete(h, name) // canonical already (TestHopHeadersCanonical): no Del's canonicalising per name
	}
}
