package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/internal/pgtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// forBackends runs test against a fresh SQLite store and a fresh
// PostgreSQL schema (see pgtest: skipped visibly without a server, except
// under CI, where it fails).
func forBackends(t *testing.T, test func(t *testing.T, open func() *Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		test(t, func() *Store { return openOrFail(t, dir) })
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		target := pgtest.Schema(t)
		test(t, func() *Store { return openOrFail(t, target) })
	})
}

func openOrFail(t *testing.T, target string) *Store {
	t.Helper()
	s, err := Open(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestTokens(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		admin, adminSecret, err := s.CreateToken(ctx, KindAdmin, "ops")
		if err != nil {
			t.Fatal(err)
		}
		agent, agentSecret, err := s.CreateToken(ctx, KindAgent, `laptop "quoted" <b>`)
		if err != nil {
			t.Fatal(err)
		}
		if adminSecret == agentSecret || len(agentSecret) < 64 {
			t.Fatalf("secrets %q and %q", adminSecret, agentSecret)
		}
		got, err := s.Authenticate(ctx, agentSecret)
		if err != nil || got.ID != agent.ID || got.Kind != KindAgent || got.Name != `laptop "quoted" <b>` {
			t.Fatalf("Authenticate(agent secret) = %+v, %v", got, err)
		}
		if got, err := s.Authenticate(ctx, adminSecret); err != nil || got.ID != admin.ID || got.Kind != KindAdmin {
			t.Fatalf("Authenticate(admin secret) = %+v, %v", got, err)
		}
		if _, err := s.Authenticate(ctx, agentSecret+"x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("wrong secret: %v, want ErrNotFound", err)
		}
		if _, _, err := s.CreateToken(ctx, "root", "x"); err == nil {
			t.Fatal("unknown kind accepted")
		}
		// The secret itself is not stored anywhere.
		var n int
		if err := s.db.QueryRow(s.q(`SELECT COUNT(*) FROM tokens WHERE hash = ? OR id = ? OR name = ?`), agentSecret, agentSecret, agentSecret).Scan(&n); err != nil || n != 0 {
			t.Fatalf("secret found in the table: %d %v", n, err)
		}
		revoked, err := s.RevokeToken(ctx, agent.ID)
		if err != nil || revoked.RevokedAt == nil {
			t.Fatalf("revoke: %+v %v", revoked, err)
		}
		if _, err := s.Authenticate(ctx, agentSecret); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked secret: %v, want ErrRevoked", err)
		}
		if _, err := s.RevokeToken(ctx, "tok_nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoke unknown: %v", err)
		}
		list, err := s.Tokens(ctx)
		if err != nil || len(list) != 2 || list[0].ID != admin.ID || list[1].ID != agent.ID || list[1].RevokedAt == nil {
			t.Fatalf("Tokens = %+v, %v", list, err)
		}
	})
}

// Names and fields with quotes, SQL and markup are stored and returned as
// data; unknown names and tokens give ErrNotFound, taken names ErrExists.
func TestTunnels(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		tok, _, err := s.CreateToken(ctx, KindAgent, "a")
		if err != nil {
			t.Fatal(err)
		}
		hostile := `x'); DROP TABLE tunnels; -- "<script>alert(1)</script>" ?`
		in := Tunnel{
			Name: "demo", AgentTokenID: tok.ID, Upstream: "http://127.0.0.1:3000/?q=" + hostile,
			HostHeader: hostile, BasicAuthUser: hostile, BasicAuthHash: "$2a$hash'\"",
			AllowCIDRs: []string{"10.0.0.0/8", "::1/128"}, Enabled: true,
		}
		created, err := s.CreateTunnel(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if created.Version != 1 || created.CreatedAt.IsZero() {
			t.Fatalf("created %+v", created)
		}
		got, err := s.Tunnel(ctx, "demo")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, created) {
			t.Fatalf("read back:\n%+v\nwant\n%+v", got, created)
		}
		if _, err := s.CreateTunnel(ctx, in); !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate: %v, want ErrExists", err)
		}
		if _, err := s.CreateTunnel(ctx, Tunnel{Name: "orphan", AgentTokenID: "tok_nope"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown token: %v, want ErrNotFound", err)
		}
		if _, err := s.Tunnel(ctx, hostile); !errors.Is(err, ErrNotFound) {
			t.Fatalf("hostile lookup: %v", err)
		}
		other, _, _ := s.CreateToken(ctx, KindAgent, "b")
		if _, err := s.CreateTunnel(ctx, Tunnel{Name: "zeta", AgentTokenID: other.ID, Upstream: "http://127.0.0.1:1"}); err != nil {
			t.Fatal(err)
		}
		if all, err := s.Tunnels(ctx, ""); err != nil || len(all) != 2 || all[0].Name != "demo" || all[1].Name != "zeta" {
			t.Fatalf("Tunnels() = %+v, %v", all, err)
		}
		if mine, err := s.Tunnels(ctx, tok.ID); err != nil || len(mine) != 1 || mine[0].Name != "demo" {
			t.Fatalf("Tunnels(token) = %+v, %v", mine, err)
		}
		upd, err := s.UpdateTunnel(ctx, "demo", func(t *Tunnel) error { t.Upstream, t.Enabled = "http://127.0.0.1:4000", false; return nil })
		if err != nil || upd.Version != 2 || upd.Upstream != "http://127.0.0.1:4000" || upd.Enabled || upd.HostHeader != hostile {
			t.Fatalf("update: %+v %v", upd, err)
		}
		if _, err := s.UpdateTunnel(ctx, "demo", func(t *Tunnel) error { t.Name = "renamed"; return nil }); err == nil {
			t.Fatal("rename accepted")
		}
		if _, err := s.UpdateTunnel(ctx, "nope", func(*Tunnel) error { return nil }); !errors.Is(err, ErrNotFound) {
			t.Fatalf("update unknown: %v", err)
		}
		if del, err := s.DeleteTunnel(ctx, "demo"); err != nil || del.Name != "demo" {
			t.Fatalf("delete: %+v %v", del, err)
		}
		if _, err := s.DeleteTunnel(ctx, "demo"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		if all, err := s.Tunnels(ctx, ""); err != nil || len(all) != 1 {
			t.Fatalf("after delete: %+v %v", all, err)
		}
	})
}

// Concurrent read-modify-write updates of one tunnel lose nothing.
func TestConcurrentUpdates(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		tok, _, _ := s.CreateToken(ctx, KindAgent, "a")
		if _, err := s.CreateTunnel(ctx, Tunnel{Name: "busy", AgentTokenID: tok.ID, HostHeader: "0"}); err != nil {
			t.Fatal(err)
		}
		const workers, each = 8, 10
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					_, err := s.UpdateTunnel(ctx, "busy", func(t *Tunnel) error {
						n, err := strconv.Atoi(t.HostHeader)
						t.HostHeader = strconv.Itoa(n + 1)
						return err
					})
					if err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		got, err := s.Tunnel(ctx, "busy")
		if err != nil || got.HostHeader != fmt.Sprint(workers*each) || got.Version != workers*each+1 {
			t.Fatalf("after %d updates: counter %q, version %d, %v", workers*each, got.HostHeader, got.Version, err)
		}
	})
}

// What was stored is there after the store is closed and opened again.
func TestReopen(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		tok, secret, _ := s.CreateToken(ctx, KindAgent, "a")
		if _, err := s.CreateTunnel(ctx, Tunnel{Name: "kept", AgentTokenID: tok.ID, Upstream: "http://127.0.0.1:9"}); err != nil {
			t.Fatal(err)
		}
		if err := s.SeenAgent(ctx, Agent{TokenID: tok.ID, Version: "v1", LastSeen: tok.CreatedAt, Edge: "e1"}); err != nil {
			t.Fatal(err)
		}
		if err := s.SeenAgent(ctx, Agent{TokenID: tok.ID, Version: "v2", LastSeen: tok.CreatedAt, Edge: "e2"}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s2 := open()
		if got, err := s2.Authenticate(ctx, secret); err != nil || got.ID != tok.ID {
			t.Fatalf("token after reopen: %+v %v", got, err)
		}
		if got, err := s2.Tunnel(ctx, "kept"); err != nil || got.Upstream != "http://127.0.0.1:9" {
			t.Fatalf("tunnel after reopen: %+v %v", got, err)
		}
		if agents, err := s2.Agents(ctx); err != nil || len(agents) != 1 || agents[0].Version != "v2" || agents[0].Edge != "e2" {
			t.Fatalf("agents after reopen: %+v %v", agents, err)
		}
	})
}
