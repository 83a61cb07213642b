package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sluicehq/sluice/agent"
)

// httpClient is the CLI's HTTP client. It resolves "localhost" and every
// name under it to the loopback address, as RFC 6761 asks and as browsers
// and curl do, so that tunnel URLs of a local edge such as
// http://demo.localhost:8080 work even where the system resolver does not
// know them. tc, if not nil, is its TLS configuration (see caFlag). It has
// no total timeout: streams last as long as they last.
func httpClient(tc *tls.Config) *http.Client {
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
	if tc != nil {
		t.TLSClientConfig = tc.Clone() // the transport adds "h2": not to the agents' copy
	}
	return &http.Client{Transport: t}
}

// caUsage is the help of --ca, on every command that talks to an edge.
const caUsage = "PEM file of CA certificates trusted for the edge's https:// certificate, besides the system roots (a private or test CA; default: the system roots alone)"

// caFlag declares --ca FILE on fs, for every command that talks to an
// edge. The returned function, called after parsing, gives the path (""
// if not set) and the TLS configuration that trusts the file's
// certificates besides the system roots (nil if not set: the defaults).
func caFlag(fs *flag.FlagSet) func() (path string, tc *tls.Config, err error) {
	file := fs.String("ca", "", caUsage)
	return func() (string, *tls.Config, error) {
		tc, err := loadCA(*file)
		return *file, tc, err
	}
}

// loadCA returns the TLS configuration that trusts the PEM file at path
// besides the system roots; nil for "".
func loadCA(path string) (*tls.Config, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	tc, err := agent.TrustCA(pem)
	if err != nil {
		return nil, fmt.Errorf("--ca %s: %w", path, err)
	}
	return tc, nil
}
