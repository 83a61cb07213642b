package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"
)

// httpClient is the CLI's HTTP client. It resolves "localhost" and every
// name under it to the loopback address, as RFC 6761 asks and as browsers
// and curl do, so that tunnel URLs of a local edge such as
// http://demo.localhost:8080 work even where the system resolver does not
// know them. It has no total timeout: streams last as long as they last.
func httpClient() *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err == nil {
			h := strings.ToLower(strings.TrimSuffix(host, "."))
			if h == "localhost" || strings.HasSuffix(h, ".localhost") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
		}
		return dialer.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: t}
}
