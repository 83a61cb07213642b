package edge_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// The plain listener speaks HTTP/2 with prior knowledge (h2c), as gRPC
// clients do without TLS, beside HTTP/1.1: to the apex and to tunnels.
func TestPlainListenerH2C(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)
	a := e.register(t, "alpha", "T")
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	e.client = &http.Client{Transport: tr, Timeout: 2 * time.Minute}

	res := e.get(t, "localhost", "/healthz")
	if res.err != nil || res.resp.Proto != "HTTP/2.0" || string(res.body) != "ok\n" {
		t.Fatalf("GET /healthz over h2c: %v", res)
	}
	c := e.goDo(e.newRequest(t, "GET", "alpha.localhost", "/x", nil))
	r := a.expectRequest(t)
	a.respond(t, r.ID, 200, map[string]string{"Content-Type": "text/plain"}, []byte("through the tunnel"))
	res = await(t, c, patience)
	if res.err != nil || res.resp.Proto != "HTTP/2.0" || res.resp.StatusCode != 200 || string(res.body) != "through the tunnel" {
		t.Fatalf("GET alpha.localhost over h2c: %v", res)
	}
}

// A plain Jetty agent (v1 without request_stream and trailers) cannot
// carry gRPC: its answers would lose grpc-status and streaming calls would
// hang. The client gets a gRPC status saying so, and the agent nothing.
func TestGRPCToPlainAgentRefused(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)
	e.register(t, "jetty", "T")
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	e.client = &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	req := e.newRequest(t, "POST", "jetty.localhost", "/grpc.testing.TestService/UnaryCall", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	res := e.do(req)
	if res.err != nil || res.resp.StatusCode != 200 || res.resp.Header.Get("Grpc-Status") != "12" ||
		!strings.Contains(res.resp.Header.Get("Grpc-Message"), "cannot carry gRPC") {
		t.Fatalf("gRPC call to a plain agent: %v %v, want grpc-status 12 saying the agent cannot carry gRPC", res, res.resp.Header)
	}
}
