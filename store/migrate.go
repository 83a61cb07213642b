package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// The schema is versioned: each change is a numbered migration, applied
// once, in order, inside one transaction with the bump of the version kept
// in schema_version. Migration 1 is the schema of the stores that predate
// the version table (its statements say IF NOT EXISTS), so a store of then
// is brought up to date like an empty one. Edges sharing a PostgreSQL store
// migrate one at a time (an advisory lock held by the transaction).

type migration struct {
	version int
	what    string
	// sql returns the statements, separated by ';', for the backend.
	sql func(postgres bool) string
}

var migrations = []migration{
	{1, "tokens, tunnels and agents", func(bool) string { return schemaV1 }},
	{2, "custom hostnames of tunnels", func(bool) string {
		return `
CREATE TABLE tunnel_hostnames (
	hostname TEXT PRIMARY KEY,
	tunnel   TEXT NOT NULL REFERENCES tunnels(name) ON DELETE CASCADE
);
CREATE INDEX tunnel_hostnames_by_tunnel ON tunnel_hostnames(tunnel);
`
	}},
	{3, "certificate storage (ACME certificates, keys and accounts) and its locks", func(postgres bool) string {
		// Keys are compared byte by byte (prefix ranges in certFiles):
		// SQLite's default collation does, PostgreSQL's needs "C".
		key, blob := `TEXT`, `BLOB`
		if postgres {
			key, blob = `TEXT COLLATE "C"`, `BYTEA`
		}
		return `
CREATE TABLE cert_files (
	key      ` + key + ` PRIMARY KEY,
	value    ` + blob + ` NOT NULL,
	modified BIGINT NOT NULL
);
CREATE TABLE cert_locks (
	name    TEXT PRIMARY KEY,
	holder  TEXT NOT NULL,
	expires BIGINT NOT NULL
);
`
	}},
	{4, "tunnel types (http, tcp) and the public port of a tcp tunnel", func(bool) string {
		return `
ALTER TABLE tunnels ADD COLUMN type TEXT NOT NULL DEFAULT 'http';
ALTER TABLE tunnels ADD COLUMN remote_port BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX tunnels_by_remote_port ON tunnels(remote_port) WHERE remote_port <> 0;
`
	}},
	{5, "udp tunnels: a remote port is one tunnel's per type (TCP and UDP ports are apart)", func(bool) string {
		return `
DROP INDEX tunnels_by_remote_port;
CREATE UNIQUE INDEX tunnels_by_type_remote_port ON tunnels(type, remote_port) WHERE remote_port <> 0;
`
	}},
}

// migrationLock is the PostgreSQL advisory lock that makes edges migrate
// one at a time.
const migrationLock = 0x5111ce

// SchemaVersion is the version of the schema this code brings stores to.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: schema: %w", err)
	}
	defer tx.Rollback()
	if s.postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("store: schema: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("store: schema: %w", err)
	}
	var have sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&have); err != nil {
		return fmt.Errorf("store: schema: %w", err)
	}
	if int(have.Int64) > SchemaVersion() {
		return fmt.Errorf("store: schema: the store is at version %d, newer than this sluice knows (%d): run a newer sluice", have.Int64, SchemaVersion())
	}
	applied := false
	for _, m := range migrations {
		if int64(m.version) <= have.Int64 {
			continue
		}
		for _, stmt := range strings.Split(m.sql(s.postgres), ";") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("store: schema: migration %d (%s): %w", m.version, m.what, err)
			}
		}
		applied = true
	}
	if !applied {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
		return fmt.Errorf("store: schema: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_version (version) VALUES (?)`), SchemaVersion()); err != nil {
		return fmt.Errorf("store: schema: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: schema: %w", err)
	}
	return nil
}
