package tunnel

import (
	"net/http"
	"slices"
	"strings"
)

// badTrailers are the fields that may not be trailers (RFC 9110, section
// 6.5.1: framing, routing, controls, authentication, content processing),
// as net/http's server refuses them.
var badTrailers = map[string]bool{
	"Authorization":       true,
	"Cache-Control":       true,
	"Connection":          true,
	"Content-Encoding":    true,
	"Content-Length":      true,
	"Content-Range":       true,
	"Content-Type":        true,
	"Expect":              true,
	"Host":                true,
	"Keep-Alive":          true,
	"Max-Forwards":        true,
	"Pragma":              true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Proxy-Connection":    true,
	"Range":               true,
	"Realm":               true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Www-Authenticate":    true,
}

// validTrailer reports whether the canonical name may be a trailer.
func validTrailer(name string) bool {
	return name != "" && !badTrailers[name] && !strings.HasPrefix(name, http.TrailerPrefix)
}

// trailerNames appends to dst the canonical names that the values of a
// Trailer header announce, leaving out invalid ones and repeats.
func trailerNames(values []string, dst []string) []string {
	for _, v := range values {
		for name := range strings.SplitSeq(v, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if validTrailer(name) && !slices.Contains(dst, name) {
				dst = append(dst, name)
			}
		}
	}
	return dst
}

// receivedTrailers returns the valid trailers of t, or nil if none.
func receivedTrailers(t http.Header) http.Header {
	var out http.Header
	for name, vv := range t {
		if len(vv) == 0 || !validTrailer(name) {
			continue
		}
		if out == nil {
			out = make(http.Header, len(t))
		}
		out[name] = vv
	}
	return out
}

// isGRPC reports whether h is the head of a gRPC request (Content-Type
// application/grpc or application/grpc+CODEC; gRPC-Web carries its
// trailers in the body and needs nothing of the tunnel). gRPC needs
// trailers (grpc-status) and, for streaming calls, streamed request
// bodies.
func isGRPC(h http.Header) bool {
	ct := h.Get("Content-Type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// AnnounceTrailers adds to h, a response's header as it is passed on, the
// Trailer field that announces the names of trailer (a parsed response's
// Trailer map): the response's own field is hop-by-hop (RemoveHopByHop).
func AnnounceTrailers(h, trailer http.Header) {
	if len(trailer) == 0 {
		return
	}
	keys := make([]string, 0, len(trailer))
	for k := range trailer {
		keys = append(keys, k)
	}
	h.Add("Trailer", strings.Join(keys, ", "))
}
