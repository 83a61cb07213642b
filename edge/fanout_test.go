package edge_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/internal/testtool"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/tunnel"
)

// What one edge of a cluster decides or changes reaches the agents and
// caches of the others through Redis pub/sub. The lease is long (renewals
// every 100 s, past every wait here): what happens is the messages' doing.

const fanoutLease = 5 * time.Minute

func TestClusterFanout(t *testing.T) {
	_, edges := startCluster(t, 3, fanoutLease)
	a, b, c := edges[0], edges[1], edges[2]
	ctx := context.Background()
	st := a.store
	_, secret, err := st.CreateToken(ctx, store.KindAgent, "managed")
	if err != nil {
		t.Fatal(err)
	}
	adminA, adminB := adminClient(t, a.testEdge, "A"), adminClient(t, b.testEdge, "A")
	// Every subscription is up once a message of A has reached B and C.
	// (Redis keeps no message for a subscription not up yet: A notifies
	// again until each has heard one.)
	for _, e := range []member{b, c} {
		testtool.Eventually(t, e.c.ID()+" hearing A's notify", func() bool {
			if metricValue(e.metrics(t), `sluice_cluster_messages_total{kind="edge.notify"}`) > 0 {
				return true
			}
			if _, err := adminA.Notify(ctx); err != nil {
				t.Fatal(err)
			}
			return false
		})
	}

	t.Run("push", func(t *testing.T) {
		_, lines := openPush(t, c.testEdge, secret) // the managed agent is at C
		next(t, lines, patience)                    // ": connected"
		if _, err := adminA.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("made"), Upstream: ptr("http://127.0.0.1:3000"), AgentToken: ptr(secret)}); err != nil {
			t.Fatal(err)
		}
		typ, data := nextEvent(t, lines, patience)
		var ev api.ConfigChanged
		if err := json.Unmarshal([]byte(data), &ev); err != nil || typ != api.EventConfigChanged || ev.Tunnel != "made" || ev.Change != api.ChangeCreated {
			t.Fatalf("at C after a create at A: %s %s, want config_changed for made", typ, data)
		}
		if _, err := adminA.Notify(ctx); err != nil {
			t.Fatal(err)
		}
		if typ, data := nextEvent(t, lines, patience); typ != api.EventConfigChanged || !strings.Contains(data, `"reason":"notify"`) {
			t.Fatalf("at C after a notify at A: %s %s", typ, data)
		}
		if _, err := adminB.DeleteTunnel(ctx, "made"); err != nil {
			t.Fatal(err)
		}
		if typ, data := nextEvent(t, lines, patience); typ != api.EventTunnelDeleted || !strings.Contains(data, `"made"`) {
			t.Fatalf("at C after a delete at B: %s %s", typ, data)
		}
	})

	t.Run("replace", func(t *testing.T) {
		first := a.register(t, "demo", "T")
		second := b.register(t, "demo", "T") // the same token at another edge
		expectRetired(t, first, "tunnel_replaced")
		if n := metricValue(a.metrics(t), "sluice_cluster_lost_total"); n != 1 {
			t.Errorf("A's sluice_cluster_lost_total = %v, want 1", n)
		}
		a.waitMetric(t, "sluice_tunnels_online", 0, 5*time.Second)
		// Requests through every edge reach the second agent.
		for _, e := range []member{a, c} {
			res := e.goDo(e.newRequest(t, "GET", "demo.localhost", "/x", nil))
			req := second.expectRequest(t)
			second.respond(t, req.ID, 200, nil, []byte("second"))
			if r := await(t, res, patience); r.err != nil || r.resp.StatusCode != 200 || string(r.body) != "second" {
				t.Fatalf("through %s: %v", e.c.ID(), r)
			}
		}
		// Another token is refused while B holds the name.
		thief := c.dial(t)
		thief.send(t, `{"type":"register","tunnel_id":"demo","agent_token":"`+secret+`"}`)
		expectRefused(t, thief, "tunnel_taken")
	})

	t.Run("retire", func(t *testing.T) {
		tok2, secret2, err := st.CreateToken(ctx, store.KindAgent, "doomed")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []struct{ name, secret string }{{"gone", secret}, {"kept", secret2}} {
			if _, err := adminA.CreateTunnel(ctx, api.TunnelRequest{Name: ptr(n.name), Upstream: ptr("http://127.0.0.1:3000"), AgentToken: ptr(n.secret)}); err != nil {
				t.Fatal(err)
			}
		}
		gone, kept, adhoc := c.register(t, "gone", secret), b.register(t, "kept", secret2), c.register(t, "adhoc2", secret2)
		if _, err := adminA.DeleteTunnel(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		expectRetired(t, gone, "tunnel_deleted")
		if _, err := adminA.RevokeToken(ctx, tok2.ID); err != nil {
			t.Fatal(err)
		}
		expectRetired(t, kept, "token_revoked")
		expectRetired(t, adhoc, "token_revoked")
	})

	t.Run("visitor rules", func(t *testing.T) {
		if _, err := adminA.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("guarded"), Upstream: ptr("http://127.0.0.1:3000"), AgentToken: ptr(secret)}); err != nil {
			t.Fatal(err)
		}
		a.serveAgentConfig(t, tunnel.DialConfig{TunnelID: "guarded", Token: secret, Protocol: tunnel.ProtocolV2}, newClusterUpstream())
		if r := a.get(t, "guarded.localhost", "/seen"); r.err != nil || r.resp.StatusCode != 200 {
			t.Fatalf("before the change: %v", r) // A has the rules cached now
		}
		changed := metricValue(a.metrics(t), `sluice_cluster_messages_total{kind="edge.changed"}`)
		if _, err := adminB.UpdateTunnel(ctx, "guarded", api.TunnelRequest{AllowCIDRs: ptr([]string{"10.0.0.0/8"})}); err != nil {
			t.Fatal(err)
		}
		a.waitMetric(t, `sluice_cluster_messages_total{kind="edge.changed"}`, changed+1, patience)
		// A applies the new rule at once, not after its 5 s cache.
		for _, e := range []member{a, c} {
			if r := e.get(t, "guarded.localhost", "/seen"); r.err != nil || r.resp.StatusCode != http.StatusForbidden || r.resp.Header.Get("X-Sluice-Error") != "ip_not_allowed" {
				t.Errorf("through %s after B changed the rules: %v; want 403 ip_not_allowed", e.c.ID(), r)
			}
		}
	})
}
