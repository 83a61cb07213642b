package agent

import (
	"net/http"

	"github.com/sluicehq/sluice/internal/h1client"
)

// upstreamTransport sends the agent's requests to the local server. The
// common case (http://, no upgrade, no Expect, no body or a small one of
// known length) goes through h1client.Client, a lean HTTP/1.1 client that works
// in the caller's goroutine; everything else through net/http: h2c://
// upstreams over HTTP/2 without TLS (prior knowledge, as gRPC servers
// expect), the others (https://, upgrades, streamed uploads) through the
// HTTP/1.1 transport, which negotiates HTTP/2 with https:// upstreams
// that offer it. Its methods are safe to call concurrently.
type upstreamTransport struct {
	h1   *http.Transport
	h2c  *http.Transport
	lean *h1client.Client
}

// newUpstreamTransport returns the agent's transport; h1 holds the
// settings (dialer, timeouts, limits, buffer sizes) that all three
// follow.
func newUpstreamTransport(h1 *http.Transport) *upstreamTransport {
	h2c := h1.Clone() // the same timeouts and limits
	h2c.Protocols = new(http.Protocols)
	h2c.Protocols.SetUnencryptedHTTP2(true)
	return &upstreamTransport{h1: h1, h2c: h2c, lean: h1client.New(h1, "agent: upstream")}
}

func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch {
	case req.URL.Scheme == "h2c":
		// A shallow copy with an http:// URL: a RoundTripper does not
		// modify its request.
		out := new(http.Request)
		*out = *req
		u := *req.URL
		u.Scheme = "http"
		out.URL = &u
		return t.h2c.RoundTrip(out)
	case h1client.Lean(req):
		return t.lean.RoundTrip(req)
	}
	return t.h1.RoundTrip(req)
}

// CloseIdleConnections closes the idle connections of the three.
func (t *upstreamTransport) CloseIdleConnections() {
	t.lean.CloseIdleConnections()
	t.h1.CloseIdleConnections()
	t.h2c.CloseIdleConnections()
}
