package edge_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// Finding 11 of issue 11: the push_url of an agent's config was built from
// the request's Host, so whoever chose the Host chose where the agent
// sends its token. It is the edge's configured public URL now.
func TestPushURLIgnoresRequestHost(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := startEdge(t, func(c *edge.Config) {
		c.Store, c.Domain, c.PublicScheme, c.PublicPort = st, "tunnels.example.com", "https", 443
	})
	_, secret, err := st.CreateToken(context.Background(), store.KindAgent, "agent")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"attacker.example", "tunnels.example.com", e.addr} {
		req := e.newRequest(t, "GET", host, "/api/agent/config", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		r := e.do(req)
		if r.err != nil || r.resp.StatusCode != http.StatusOK {
			t.Fatalf("Host %s: %v", host, r)
		}
		var cfg api.AgentConfig
		if err := json.Unmarshal(r.body, &cfg); err != nil {
			t.Fatal(err)
		}
		if want := "https://tunnels.example.com/api/agent/push"; cfg.PushURL != want {
			t.Errorf("Host %s: push_url %q, want %q", host, cfg.PushURL, want)
		}
	}
}
