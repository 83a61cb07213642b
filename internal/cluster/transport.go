package cluster

import (
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http/httpguts"
)

// transport carries requests to other edges: HTTP/2 on one pooled
// connection per peer (prior knowledge for http://, ALPN for https://),
// and HTTP/1.1 for upgrades (WebSocket), which net/http's client cannot
// send over HTTP/2. Neither asks for compression: bodies cross untouched.
type transport struct {
	h2 *http.Transport
	h1 *http.Transport
}

func newTransport() *transport {
	dial := (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	h2 := &http.Transport{
		DialContext:         dial,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
		IdleConnTimeout:     5 * time.Minute,
		// A peer that stops answering is found out by pings, as for the
		// agents' sessions, and its streams fail. DATA frames of up to
		// 1 MiB rather than 16 KiB: fewer frames per big body. The flow
		// control windows stay net/http's (4 MiB per stream, 1 GiB per
		// connection), so that slow visitors of some streams do not
		// exhaust the connection's window and stall the others.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 15 * time.Second, MaxReadFrameSize: 1 << 20},
	}
	h2.Protocols = new(http.Protocols)
	h2.Protocols.SetHTTP2(true)
	h2.Protocols.SetUnencryptedHTTP2(true)
	h1 := &http.Transport{
		DialContext:         dial,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
		MaxIdleConnsPerHost: -1, // an upgraded connection is never reused anyway
	}
	h1.Protocols = new(http.Protocols)
	h1.Protocols.SetHTTP1(true)
	return &transport{h2: h2, h1: h1}
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade") && r.Header.Get("Upgrade") != "" {
		return t.h1.RoundTrip(r)
	}
	return t.h2.RoundTrip(r)
}

func (t *transport) close() {
	t.h2.CloseIdleConnections()
	t.h1.CloseIdleConnections()
}
