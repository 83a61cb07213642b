package store

import (
	"context"
	"database/sql"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/pgtest"
	"github.com/sluicehq/sluice/wire"
)

// tunnelColsV1 are the tunnels table's columns before migration 4.
const tunnelColsV1 = `name, agent_token_id, upstream, host_header, basic_auth_user, basic_auth_hash, allow_cidrs, enabled, version, created_at, updated_at`

// A tunnel keeps its type and remote port; an http tunnel is the default.
func TestTunnelTypes(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		tok, _, err := s.CreateToken(ctx, KindAgent, "a")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.CreateTunnel(ctx, Tunnel{Name: "web", AgentTokenID: tok.ID, Upstream: "http://127.0.0.1:3000"}); err != nil || got.Type != wire.TunnelHTTP {
			t.Fatalf("an http tunnel: %+v, %v", got, err)
		}
		if _, err := s.CreateTunnel(ctx, Tunnel{Name: "db", AgentTokenID: tok.ID, Type: wire.TunnelTCP, Upstream: "tcp://127.0.0.1:5432", RemotePort: 20001}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Tunnel(ctx, "db")
		if err != nil || got.Type != wire.TunnelTCP || got.RemotePort != 20001 || got.Upstream != "tcp://127.0.0.1:5432" {
			t.Fatalf("the tcp tunnel read back: %+v, %v", got, err)
		}
		if got, err := s.UpdateTunnel(ctx, "db", func(t *Tunnel) error { t.RemotePort = 20002; return nil }); err != nil || got.RemotePort != 20002 {
			t.Fatalf("update the remote port: %+v, %v", got, err)
		}
		// A remote port is one tunnel's at most (0, any, is everyone's).
		if _, err := s.CreateTunnel(ctx, Tunnel{Name: "db2", AgentTokenID: tok.ID, Type: wire.TunnelTCP, Upstream: "tcp://127.0.0.1:5433", RemotePort: 20002}); !errors.Is(err, ErrPortTaken) {
			t.Fatalf("a second tunnel on port 20002: %v, want ErrPortTaken", err)
		}
		if _, err := s.UpdateTunnel(ctx, "web", func(t *Tunnel) error { t.Type, t.RemotePort = wire.TunnelTCP, 20002; return nil }); !errors.Is(err, ErrPortTaken) {
			t.Fatalf("web onto port 20002: %v, want ErrPortTaken", err)
		}
		// TCP and UDP ports are apart: a udp tunnel on a tcp tunnel's port
		// is allowed, a second udp tunnel there is not.
		if got, err := s.CreateTunnel(ctx, Tunnel{Name: "dns", AgentTokenID: tok.ID, Type: wire.TunnelUDP, Upstream: "udp://127.0.0.1:53", RemotePort: 20002}); err != nil || got.Type != wire.TunnelUDP || got.RemotePort != 20002 {
			t.Fatalf("a udp tunnel on the tcp tunnel's port: %+v, %v", got, err)
		}
		if _, err := s.CreateTunnel(ctx, Tunnel{Name: "dns2", AgentTokenID: tok.ID, Type: wire.TunnelUDP, Upstream: "udp://127.0.0.1:54", RemotePort: 20002}); !errors.Is(err, ErrPortTaken) {
			t.Fatalf("a second udp tunnel on port 20002: %v, want ErrPortTaken", err)
		}
		if got, err := s.RemotePorts(ctx, wire.TunnelUDP); err != nil || !maps.Equal(got, map[int]string{20002: "dns"}) {
			t.Fatalf("udp remote ports: %v, %v", got, err)
		}
		if _, err := s.DeleteTunnel(ctx, "dns"); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"any1", "any2"} {
			if _, err := s.CreateTunnel(ctx, Tunnel{Name: n, AgentTokenID: tok.ID, Type: wire.TunnelTCP, Upstream: "tcp://127.0.0.1:1"}); err != nil {
				t.Fatalf("a tcp tunnel on any port: %v", err)
			}
		}
		if got, err := s.RemotePorts(ctx, wire.TunnelTCP); err != nil || !maps.Equal(got, map[int]string{20002: "db"}) {
			t.Fatalf("tcp remote ports: %v, %v (any-port tunnels have none)", got, err)
		}
		for _, n := range []string{"any1", "any2"} {
			if _, err := s.DeleteTunnel(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := s.RemotePorts(ctx, wire.TunnelUDP); err != nil || len(got) != 0 {
			t.Fatalf("udp remote ports after dns is gone: %v, %v", got, err)
		}
		list, err := s.Tunnels(ctx, "")
		if err != nil || len(list) != 2 {
			t.Fatalf("tunnels: %+v, %v", list, err)
		}
		for _, tn := range list {
			if tn.Name == "db" && (tn.Type != wire.TunnelTCP || tn.RemotePort != 20002) || tn.Name == "web" && tn.Type != wire.TunnelHTTP {
				t.Fatalf("listed: %+v", tn)
			}
		}
	})
}

// A store at version 3 (before tunnel types) is brought to the current
// version; its tunnels become http tunnels without a remote port.
func TestMigrateFromV3(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "sluice.db"))
		if err != nil {
			t.Fatal(err)
		}
		testMigrateFromV3(t, db, false, dir)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		target := pgtest.Schema(t)
		db, err := sql.Open("pgx", target)
		if err != nil {
			t.Fatal(err)
		}
		testMigrateFromV3(t, db, true, target)
	})
}

func testMigrateFromV3(t *testing.T, db *sql.DB, postgres bool, target string) {
	ctx := context.Background()
	old := &Store{db: db, postgres: postgres}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(old.q(q), args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE schema_version (version BIGINT NOT NULL)`)
	for _, m := range migrations {
		if m.version > 3 {
			break
		}
		for _, stmt := range strings.Split(m.sql(postgres), ";") {
			if strings.TrimSpace(stmt) != "" {
				exec(stmt)
			}
		}
	}
	exec(`INSERT INTO schema_version (version) VALUES (3)`)
	tok, _, err := old.CreateToken(ctx, KindAgent, "old")
	if err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO tunnels (`+tunnelColsV1+`) VALUES (?, ?, ?, '', '', '', '', TRUE, 1, 0, 0)`, "kept", tok.ID, "http://127.0.0.1:9")
	db.Close()

	s := openOrFail(t, target)
	var v int
	if err := s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("schema_version %d, %v; want %d", v, err, SchemaVersion())
	}
	got, err := s.Tunnel(ctx, "kept")
	if err != nil || got.Type != wire.TunnelHTTP || got.RemotePort != 0 || got.Upstream != "http://127.0.0.1:9" {
		t.Fatalf("old tunnel after migration: %+v, %v", got, err)
	}
	if got, err := s.UpdateTunnel(ctx, "kept", func(t *Tunnel) error {
		t.Type, t.Upstream, t.RemotePort = wire.TunnelTCP, "tcp://127.0.0.1:9", 20003
		return nil
	}); err != nil || got.Type != wire.TunnelTCP || got.RemotePort != 20003 {
		t.Fatalf("make it a tcp tunnel: %+v, %v", got, err)
	}
}

// A store at version 4 (a remote port unique whatever the type) is brought
// to the current version: its tcp tunnel keeps its port, and a udp tunnel
// may then have the same port number.
func TestMigrateFromV4(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "sluice.db"))
		if err != nil {
			t.Fatal(err)
		}
		testMigrateFromV4(t, db, false, dir)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		target := pgtest.Schema(t)
		db, err := sql.Open("pgx", target)
		if err != nil {
			t.Fatal(err)
		}
		testMigrateFromV4(t, db, true, target)
	})
}

func testMigrateFromV4(t *testing.T, db *sql.DB, postgres bool, target string) {
	ctx := context.Background()
	old := &Store{db: db, postgres: postgres}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(old.q(q), args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE schema_version (version BIGINT NOT NULL)`)
	for _, m := range migrations {
		if m.version > 4 {
			break
		}
		for _, stmt := range strings.Split(m.sql(postgres), ";") {
			if strings.TrimSpace(stmt) != "" {
				exec(stmt)
			}
		}
	}
	exec(`INSERT INTO schema_version (version) VALUES (4)`)
	tok, _, err := old.CreateToken(ctx, KindAgent, "old")
	if err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO tunnels (`+tunnelColsV1+`, type, remote_port) VALUES (?, ?, ?, '', '', '', '', TRUE, 1, 0, 0, 'tcp', 20001)`, "db", tok.ID, "tcp://127.0.0.1:5432")
	db.Close()

	s := openOrFail(t, target)
	var v int
	if err := s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("schema_version %d, %v; want %d", v, err, SchemaVersion())
	}
	if got, err := s.Tunnel(ctx, "db"); err != nil || got.Type != wire.TunnelTCP || got.RemotePort != 20001 {
		t.Fatalf("old tcp tunnel after migration: %+v, %v", got, err)
	}
	if _, err := s.CreateTunnel(ctx, Tunnel{Name: "dns", AgentTokenID: tok.ID, Type: wire.TunnelUDP, Upstream: "udp://127.0.0.1:53", RemotePort: 20001}); err != nil {
		t.Fatalf("a udp tunnel on the tcp tunnel's port: %v", err)
	}
	if _, err := s.CreateTunnel(ctx, Tunnel{Name: "db2", AgentTokenID: tok.ID, Type: wire.TunnelTCP, Upstream: "tcp://127.0.0.1:5433", RemotePort: 20001}); !errors.Is(err, ErrPortTaken) {
		t.Fatalf("a second tcp tunnel on port 20001: %v, want ErrPortTaken", err)
	}
}
