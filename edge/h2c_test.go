package edge_test

import (
	"net/http"
	"testing"
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
	e.client = &http.Client{Transport: tr}

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
