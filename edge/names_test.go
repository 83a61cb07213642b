package edge_test

// Names stay with their owners (issue 11, findings 1, 3 and 12): an
// admin's decision takes a name back from whoever holds it, an offline
// name stays reserved for its token, and a tunnel ended by an admin says
// why at once.

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// expectRetired checks that a's next frame is an error with code, and that
// the edge then closes its connection.
func expectRetired(t *testing.T, a *rawAgent, code string) {
	t.Helper()
	f := a.read(t, waitFor(5*time.Second))
	if f.typ() != "error" || f.str("code") != code {
		t.Fatalf("agent got %s, want an error frame %q", f.raw, code)
	}
	a.expectClosed(t, waitFor(5*time.Second))
}

// expectAnswer checks a public request to host: status and X-Sluice-Error.
func expectAnswer(t *testing.T, e *testEdge, host string, status int, code string) {
	t.Helper()
	r := e.get(t, host, "/")
	if r.err != nil || r.resp.StatusCode != status || r.resp.Header.Get("X-Sluice-Error") != code {
		t.Fatalf("GET %s: %v, want %d %s", host, r, status, code)
	}
}

// Finding 1: a token holder registers a name nobody stored yet (with
// basic auth, so that visitors would hand it the owner's credentials);
// the admin then creates that tunnel for another token. The squatter is
// retired at once (tunnel_replaced), visitors who pass the owner's basic
// auth never reach it, and the owner's agent takes the name.
func TestCreateTakesSquattedName(t *testing.T) {
	t.Parallel()
	e, _, _, ownerSecret := storeEdge(t, 0)
	ctx := context.Background()
	squatter := e.register(t, "shop", "T")

	created := make(chan error, 1)
	go func() {
		_, err := adminClient(t, e, "A").CreateTunnel(ctx, api.TunnelRequest{Name: ptr("shop"), Upstream: ptr("http://127.0.0.1:3000"),
			AgentToken: ptr(ownerSecret), BasicAuthUser: ptr("u"), BasicAuthPassword: ptr("p")})
		created <- err
	}()
	expectRetired(t, squatter, "tunnel_replaced")
	if err := <-created; err != nil {
		t.Fatalf("CreateTunnel: %v", err)
	}
	// Visitors with the owner's password get the edge's answer, not the
	// squatter; the squatter cannot come back.
	req := e.newRequest(t, "GET", "shop.localhost", "/", nil)
	req.SetBasicAuth("u", "p")
	if r := e.do(req); r.err != nil || r.resp.StatusCode != http.StatusBadGateway || r.resp.Header.Get("X-Sluice-Error") != "agent_offline" {
		t.Fatalf("visitor after the create: %v, want 502 agent_offline", r)
	}
	again := e.dial(t)
	again.send(t, `{"type":"register","tunnel_id":"shop","agent_token":"T"}`)
	expectRefused(t, again, "tunnel_taken")

	owner := e.register(t, "shop", ownerSecret)
	c := e.goDo(req)
	r := owner.expectRequest(t)
	if _, ok := r.Headers["Authorization"]; ok {
		t.Errorf("the visitor's basic auth reached the agent: %v", r.Headers)
	}
	owner.respond(t, r.ID, 200, nil, []byte("owner"))
	if res := await(t, c, waitFor(5*time.Second)); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "owner" {
		t.Fatalf("visitor with the owner's agent online: %v", res)
	}
	e.waitMetric(t, "sluice_tunnels_online", 1, 5*time.Second)
}

// Finding 1, by PATCH: giving a tunnel to another token ends the old
// owner's session and reservation; the new owner registers at once.
func TestReownTakesName(t *testing.T) {
	t.Parallel()
	e, st, _, firstSecret := storeEdge(t, 0)
	ctx := context.Background()
	second, secondSecret, err := st.CreateToken(ctx, store.KindAgent, "second")
	if err != nil {
		t.Fatal(err)
	}
	c := adminClient(t, e, "A")
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("moved"), Upstream: ptr("http://127.0.0.1:3000"), AgentToken: ptr(firstSecret)}); err != nil {
		t.Fatal(err)
	}
	first := e.register(t, "moved", firstSecret)
	updated := make(chan error, 1)
	go func() {
		_, err := c.UpdateTunnel(ctx, "moved", api.TunnelRequest{AgentTokenID: ptr(second.ID)})
		updated <- err
	}()
	expectRetired(t, first, "tunnel_replaced")
	if err := <-updated; err != nil {
		t.Fatal(err)
	}
	e.register(t, "moved", secondSecret)
}

// Finding 3: on a --tokens edge, the name of an agent that dropped for a
// moment stays its token's: another token is refused while the name is
// remembered, and the same token comes back freely. (The memory's end, on
// a fake clock: TestOfflineReservationExpires.)
func TestOfflineNameReserved(t *testing.T) {
	t.Parallel()
	e := startEdge(t, func(c *edge.Config) { c.Tokens = []string{"T", "T2"} }) // 24 h of memory
	owner := e.register(t, "mine", "T")
	owner.ws.Close()
	e.waitOffline(t, "mine.localhost", 5*time.Second)

	thief := e.dial(t)
	thief.send(t, `{"type":"register","tunnel_id":"mine","agent_token":"T2"}`)
	f := thief.read(t, 5*time.Second)
	if f.typ() != "error" || f.str("code") != "tunnel_taken" {
		t.Fatalf("another token after the owner dropped: %s, want tunnel_taken", f.raw)
	}
	thief.expectClosed(t, 5*time.Second)
	e.register(t, "mine", "T")
}

// Finding 12: deleted or disabled tunnels and revoked tokens answer with
// the true reason at once, not "agent offline ... serves again when it
// reconnects".
func TestEndedTunnelsSayWhy(t *testing.T) {
	t.Parallel()
	e, st, _, secret := storeEdge(t, 0)
	ctx := context.Background()
	c := adminClient(t, e, "A")
	for _, name := range []string{"gone", "off"} {
		if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr(name), Upstream: ptr("http://127.0.0.1:3000"), AgentToken: ptr(secret)}); err != nil {
			t.Fatal(err)
		}
	}
	gone, off := e.register(t, "gone", secret), e.register(t, "off", secret)
	if _, err := c.DeleteTunnel(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	expectAnswer(t, e, "gone.localhost", http.StatusNotFound, "tunnel_deleted")
	expectRetired(t, gone, "tunnel_deleted")
	expectAnswer(t, e, "gone.localhost", http.StatusNotFound, "tunnel_deleted")

	if _, err := c.UpdateTunnel(ctx, "off", api.TunnelRequest{Enabled: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	expectAnswer(t, e, "off.localhost", http.StatusServiceUnavailable, "tunnel_disabled")
	expectRetired(t, off, "tunnel_disabled")
	expectAnswer(t, e, "off.localhost", http.StatusServiceUnavailable, "tunnel_disabled")

	// A revoked token: its stored tunnel and its ad-hoc names.
	tok, secret2, err := st.CreateToken(ctx, store.KindAgent, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("kept"), Upstream: ptr("http://127.0.0.1:3000"), AgentToken: ptr(secret2)}); err != nil {
		t.Fatal(err)
	}
	kept, adhoc := e.register(t, "kept", secret2), e.register(t, "adhoc", secret2)
	if _, err := c.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"kept.localhost", "adhoc.localhost"} {
		expectAnswer(t, e, host, http.StatusServiceUnavailable, "token_revoked")
	}
	expectRetired(t, kept, "token_revoked")
	expectRetired(t, adhoc, "token_revoked")
	expectAnswer(t, e, "kept.localhost", http.StatusServiceUnavailable, "token_revoked")
	e.waitMetric(t, "sluice_tunnels_online", 0, 5*time.Second)
}
