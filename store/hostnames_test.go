package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/pgtest"
)

func TestValidHostname(t *testing.T) {
	t.Parallel()
	good := []string{"app.example.com", "a.b", "x-1.example.org", "1.example.com", "a.b.c.d.e.f", "xn--bcher-kva.example",
		strings.Repeat("a", 63) + ".com", strings.Repeat("abcdefghi.", 24) + "example.com"}
	bad := []string{"", "localhost", "App.example.com", "app.example.com.", ".example.com", "a..b", "-a.com", "a-.com",
		"*.example.com", "a_b.example.com", "1.2.3.4", "example.123", "[::1]", "::1", "app.example.com:443",
		strings.Repeat("a", 64) + ".com", strings.Repeat("abcdefghi.", 25) + "example.com", "é.example.com", "a b.com"}
	for _, h := range good {
		if !ValidHostname(h) {
			t.Errorf("ValidHostname(%q) = false", h)
		}
	}
	for _, h := range bad {
		if ValidHostname(h) {
			t.Errorf("ValidHostname(%q) = true", h)
		}
	}
}

// A hostname belongs to one tunnel at most; a tunnel's hostnames are
// kept sorted, replaced as a whole by an update, cleared by an empty
// list, freed when the tunnel is deleted, and found by TunnelByHostname.
func TestHostnames(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		tok, _, _ := s.CreateToken(ctx, KindAgent, "a")
		web, err := s.CreateTunnel(ctx, Tunnel{Name: "web", AgentTokenID: tok.ID, Upstream: "http://127.0.0.1:1",
			Hostnames: []string{"www.example.com", "app.example.com", "www.example.com"}})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"app.example.com", "www.example.com"}
		if !reflect.DeepEqual(web.Hostnames, want) {
			t.Fatalf("created with %q, want %q", web.Hostnames, want)
		}
		if got, err := s.Tunnel(ctx, "web"); err != nil || !reflect.DeepEqual(got, web) {
			t.Fatalf("Tunnel = %+v, %v; want %+v", got, err, web)
		}
		// Taken by web: neither a new tunnel nor an update of another gets it.
		_, err = s.CreateTunnel(ctx, Tunnel{Name: "api", AgentTokenID: tok.ID, Hostnames: []string{"api.example.com", "app.example.com"}})
		var taken *HostnameTakenError
		if !errors.As(err, &taken) || taken.Hostname != "app.example.com" || taken.Tunnel != "web" || !errors.Is(err, ErrHostnameTaken) {
			t.Fatalf("create with a taken hostname: %v", err)
		}
		if _, err := s.Tunnel(ctx, "api"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the refused tunnel was stored: %v", err)
		}
		if _, err := s.CreateTunnel(ctx, Tunnel{Name: "api", AgentTokenID: tok.ID, Hostnames: []string{"api.example.com"}}); err != nil {
			t.Fatal(err)
		}
		_, err = s.UpdateTunnel(ctx, "api", func(t *Tunnel) error { t.Hostnames = append(t.Hostnames, "www.example.com"); return nil })
		if !errors.As(err, &taken) || taken.Hostname != "www.example.com" || taken.Tunnel != "web" {
			t.Fatalf("update with a taken hostname: %v", err)
		}
		if got, _ := s.Tunnel(ctx, "api"); got.Version != 1 || !reflect.DeepEqual(got.Hostnames, []string{"api.example.com"}) {
			t.Fatalf("after the refused update: %+v", got)
		}
		for _, bad := range []string{"Upper.example.com", "trailing.example.com.", "nodot", "1.2.3.4"} {
			if _, err := s.UpdateTunnel(ctx, "api", func(t *Tunnel) error { t.Hostnames = []string{bad}; return nil }); !errors.Is(err, ErrBadHostname) {
				t.Errorf("update with %q: %v, want ErrBadHostname", bad, err)
			}
			if _, err := s.CreateTunnel(ctx, Tunnel{Name: "bad", AgentTokenID: tok.ID, Hostnames: []string{bad}}); !errors.Is(err, ErrBadHostname) {
				t.Errorf("create with %q: %v, want ErrBadHostname", bad, err)
			}
		}
		// An update that leaves the hostnames alone keeps them.
		if got, err := s.UpdateTunnel(ctx, "web", func(t *Tunnel) error { t.Upstream = "http://127.0.0.1:2"; return nil }); err != nil || !reflect.DeepEqual(got.Hostnames, want) {
			t.Fatalf("unrelated update: %+v, %v", got, err)
		}
		// Replacing the list frees what is left out, for another tunnel.
		got, err := s.UpdateTunnel(ctx, "web", func(t *Tunnel) error { t.Hostnames = []string{"www.example.com"}; return nil })
		if err != nil || !reflect.DeepEqual(got.Hostnames, []string{"www.example.com"}) {
			t.Fatalf("replace: %+v, %v", got, err)
		}
		if got, err := s.UpdateTunnel(ctx, "api", func(t *Tunnel) error { t.Hostnames = append(t.Hostnames, "app.example.com"); return nil }); err != nil ||
			!reflect.DeepEqual(got.Hostnames, []string{"api.example.com", "app.example.com"}) {
			t.Fatalf("freed hostname for another tunnel: %+v, %v", got, err)
		}
		all, err := s.Hostnames(ctx)
		if wantAll := map[string]string{"www.example.com": "web", "api.example.com": "api", "app.example.com": "api"}; err != nil || !reflect.DeepEqual(all, wantAll) {
			t.Fatalf("Hostnames = %v, %v; want %v", all, err, wantAll)
		}
		if list, err := s.Tunnels(ctx, ""); err != nil || len(list) != 2 || !reflect.DeepEqual(list[0].Hostnames, []string{"api.example.com", "app.example.com"}) ||
			!reflect.DeepEqual(list[1].Hostnames, []string{"www.example.com"}) {
			t.Fatalf("Tunnels = %+v, %v", list, err)
		}
		if got, err := s.TunnelByHostname(ctx, "app.example.com"); err != nil || got.Name != "api" {
			t.Fatalf("TunnelByHostname = %+v, %v", got, err)
		}
		if _, err := s.TunnelByHostname(ctx, "nobody.example.com"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("TunnelByHostname(unknown) = %v", err)
		}
		// Cleared, then deleted: the names are free again.
		if got, err := s.UpdateTunnel(ctx, "web", func(t *Tunnel) error { t.Hostnames = nil; return nil }); err != nil || got.Hostnames != nil {
			t.Fatalf("clear: %+v, %v", got, err)
		}
		if del, err := s.DeleteTunnel(ctx, "api"); err != nil || len(del.Hostnames) != 2 {
			t.Fatalf("delete: %+v, %v", del, err)
		}
		if all, err := s.Hostnames(ctx); err != nil || len(all) != 0 {
			t.Fatalf("after clear and delete: %v, %v", all, err)
		}
		if _, err := s.CreateTunnel(ctx, Tunnel{Name: "again", AgentTokenID: tok.ID, Hostnames: []string{"app.example.com", "api.example.com"}}); err != nil {
			t.Fatalf("a deleted tunnel's hostname: %v", err)
		}
	})
}

// A store made before the schema was versioned (migration 1 alone, no
// schema_version table) is brought up to date when opened, and keeps its
// tokens and tunnels; opening it again migrates nothing.
func TestMigrateFromUnversioned(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "sluice.db"))
		if err != nil {
			t.Fatal(err)
		}
		testMigrateFromUnversioned(t, db, false, dir)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		target := pgtest.Schema(t)
		db, err := sql.Open("pgx", target)
		if err != nil {
			t.Fatal(err)
		}
		testMigrateFromUnversioned(t, db, true, target)
	})
}

func testMigrateFromUnversioned(t *testing.T, db *sql.DB, postgres bool, target string) {
	ctx := context.Background()
	old := &Store{db: db, postgres: postgres}
	for _, stmt := range strings.Split(schemaV1, ";") {
		if strings.TrimSpace(stmt) != "" {
			if _, err := db.Exec(stmt); err != nil {
				t.Fatal(err)
			}
		}
	}
	tok, _, err := old.CreateToken(ctx, KindAgent, "old")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(old.q(`INSERT INTO tunnels (`+tunnelColsV1+`) VALUES (?, ?, ?, '', '', '', '', TRUE, 1, 0, 0)`), "kept", tok.ID, "http://127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openOrFail(t, target)
	var v int
	if err := s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("schema_version %d, %v; want %d", v, err, SchemaVersion())
	}
	got, err := s.UpdateTunnel(ctx, "kept", func(t *Tunnel) error { t.Hostnames = []string{"kept.example.com"}; return nil })
	if err != nil || got.Upstream != "http://127.0.0.1:9" || got.AgentTokenID != tok.ID || !reflect.DeepEqual(got.Hostnames, []string{"kept.example.com"}) {
		t.Fatalf("old tunnel after migration: %+v, %v", got, err)
	}
	if err := s.PutCertFile(ctx, "certs/a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openOrFail(t, target)
	if got, err := s2.Tunnel(ctx, "kept"); err != nil || !reflect.DeepEqual(got.Hostnames, []string{"kept.example.com"}) {
		t.Fatalf("after reopening: %+v, %v", got, err)
	}
	var rows int
	if err := s2.db.QueryRow(`SELECT COUNT(*) FROM schema_version`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("schema_version has %d rows, %v", rows, err)
	}
}

// A store whose schema is newer than this code is refused, not changed.
func TestMigrateRefusesNewer(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *Store) {
		s := open()
		if _, err := s.db.Exec(s.q(`UPDATE schema_version SET version = ?`), SchemaVersion()+1); err != nil {
			t.Fatal(err)
		}
		if err := s.migrate(context.Background()); err == nil || !strings.Contains(err.Error(), "newer") {
			t.Fatalf("migrate over a newer schema: %v", err)
		}
	})
}
