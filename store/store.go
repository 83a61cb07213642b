// Package store keeps the edge's control-plane state: tokens, tunnels and
// agents. Two backends share one implementation over database/sql: SQLite
// (modernc.org/sqlite, pure Go, a file under a data directory: nothing to
// install) and PostgreSQL (pgx), for several edges sharing one store.
//
// Token secrets are never stored: a token is kept as the SHA-256 of its
// secret, and the secret is returned once, when the token is created.
// Everything a client sends (names, upstream URLs, passwords) is bound as a
// query parameter, never spliced into SQL.
package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/sluicehq/sluice/wire"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// Errors the store returns; callers map them to HTTP statuses.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	// ErrPortTaken: a tcp or udp tunnel's remote port is another tunnel's of its type.
	ErrPortTaken = errors.New("store: remote port taken")
	ErrRevoked   = errors.New("store: token revoked")
	// ErrHostnameTaken: a hostname belongs to another tunnel (the error
	// is a *HostnameTakenError, which names it).
	ErrHostnameTaken = errors.New("store: hostname taken")
	// ErrBadHostname: a hostname that ValidHostname refuses.
	ErrBadHostname = errors.New("store: not a valid hostname")
)

// Token kinds.
const (
	KindAdmin = "admin"
	KindAgent = "agent"
)

// Token is a credential, without its secret. The store's types are
// persistence types: the edge's API shows them as the types of package
// api, which it converts them to.
type Token struct {
	ID        string
	Kind      string
	Name      string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// Tunnel is a tunnel's stored configuration.
type Tunnel struct {
	Name         string
	AgentTokenID string
	// Type is the tunnel's kind, wire.TunnelHTTP (the default, also for
	// ""), wire.TunnelTCP or wire.TunnelUDP.
	Type string
	// Upstream is where a remotely managed agent sends this tunnel's
	// requests, such as http://127.0.0.1:3000 (tcp://127.0.0.1:5432 for a
	// tcp tunnel).
	Upstream string
	// RemotePort is a tcp or udp tunnel's public port at the edge; 0 for
	// one from the edge's range (and for http tunnels). A port is one
	// tunnel's per type (ErrPortTaken): TCP and UDP ports are apart.
	RemotePort int
	// HostHeader is the agent's Host rewrite: "", "preserve", "rewrite" or
	// a literal host.
	HostHeader string
	// BasicAuthUser and BasicAuthHash protect the tunnel's visitors with
	// basic auth when set (the hash is the edge's, never a password).
	BasicAuthUser string
	BasicAuthHash string
	// AllowCIDRs, when not empty, are the only visitor addresses let in.
	AllowCIDRs []string
	// Hostnames are the tunnel's custom hostnames (see ValidHostname),
	// sorted; each belongs to this tunnel alone.
	Hostnames []string
	Enabled   bool
	Version   int64 // incremented by each update
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Agent is what the edge last saw of an agent token's connection.
type Agent struct {
	TokenID  string
	Version  string
	LastSeen time.Time
	Edge     string
}

// Store is a control-plane store. Its methods are safe for concurrent use.
type Store struct {
	db       *sql.DB
	postgres bool
}

// Open opens the store at target: a postgres:// or postgresql:// URL for
// PostgreSQL, otherwise a directory in which the SQLite file sluice.db is
// kept (created if missing). The schema is created or brought up to date.
func Open(ctx context.Context, target string) (*Store, error) {
	s := &Store{}
	var err error
	if strings.HasPrefix(target, "postgres://") || strings.HasPrefix(target, "postgresql://") {
		s.postgres = true
		s.db, err = sql.Open("pgx", target)
	} else {
		if target == "" {
			return nil, errors.New("store: no data directory")
		}
		if err := os.MkdirAll(target, 0o700); err != nil {
			return nil, fmt.Errorf("store: data directory: %w", err)
		}
		dsn := "file:" + filepath.Join(target, "sluice.db") +
			"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate"
		s.db, err = sql.Open("sqlite", dsn)
		// One connection: SQLite has one writer anyway, and a single
		// connection makes every transaction serial, without busy errors.
		s.db.SetMaxOpenConns(1)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Backend is "sqlite" or "postgres".
func (s *Store) Backend() string {
	if s.postgres {
		return "postgres"
	}
	return "sqlite"
}

// schemaV1 is the schema of the first stores, before it was versioned:
// migration 1 (see migrate.go).
const schemaV1 = `
CREATE TABLE IF NOT EXISTS tokens (
	id          TEXT PRIMARY KEY,
	kind        TEXT NOT NULL,
	name        TEXT NOT NULL,
	hash        TEXT NOT NULL UNIQUE,
	created_at  BIGINT NOT NULL,
	revoked_at  BIGINT
);
CREATE TABLE IF NOT EXISTS tunnels (
	name            TEXT PRIMARY KEY,
	agent_token_id  TEXT NOT NULL REFERENCES tokens(id),
	upstream        TEXT NOT NULL,
	host_header     TEXT NOT NULL,
	basic_auth_user TEXT NOT NULL,
	basic_auth_hash TEXT NOT NULL,
	allow_cidrs     TEXT NOT NULL,
	enabled         BOOLEAN NOT NULL,
	version         BIGINT NOT NULL,
	created_at      BIGINT NOT NULL,
	updated_at      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS tunnels_by_token ON tunnels(agent_token_id);
CREATE TABLE IF NOT EXISTS agents (
	token_id   TEXT PRIMARY KEY REFERENCES tokens(id),
	version    TEXT NOT NULL,
	last_seen  BIGINT NOT NULL,
	edge       TEXT NOT NULL
);
`

// q rewrites a query's ? placeholders as $1, $2, ... for PostgreSQL.
func (s *Store) q(query string) string {
	if !s.postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// Times are stored as Unix microseconds, the same on both backends.
func toMicros(t time.Time) int64 { return t.UnixMicro() }
func fromMicros(us int64) time.Time {
	return time.UnixMicro(us).UTC()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// HashSecret is how a token secret is kept: its SHA-256, in hex. Secrets
// are 256 random bits, so a fast hash is enough.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// CreateToken creates a token of kind (KindAdmin or KindAgent) and returns
// it with its secret, which is not kept and cannot be shown again.
func (s *Store) CreateToken(ctx context.Context, kind, name string) (Token, string, error) {
	if kind != KindAdmin && kind != KindAgent {
		return Token{}, "", fmt.Errorf("store: token kind %q is not %q or %q", kind, KindAdmin, KindAgent)
	}
	t := Token{ID: "tok_" + randomHex(8), Kind: kind, Name: name, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	secret := "sl" + kind[:2] + "_" + randomHex(32)
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO tokens (id, kind, name, hash, created_at) VALUES (?, ?, ?, ?, ?)`),
		t.ID, t.Kind, t.Name, HashSecret(secret), toMicros(t.CreatedAt))
	if err != nil {
		return Token{}, "", fmt.Errorf("store: create token: %w", err)
	}
	return t, secret, nil
}

const tokenCols = `id, kind, name, created_at, revoked_at`

func scanToken(row interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var created int64
	var revoked sql.NullInt64
	if err := row.Scan(&t.ID, &t.Kind, &t.Name, &created, &revoked); err != nil {
		return Token{}, err
	}
	t.CreatedAt = fromMicros(created)
	if revoked.Valid {
		r := fromMicros(revoked.Int64)
		t.RevokedAt = &r
	}
	return t, nil
}

// Authenticate returns the token whose secret this is: ErrNotFound for an
// unknown secret, ErrRevoked (with the token) for a revoked one.
func (s *Store) Authenticate(ctx context.Context, secret string) (Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, s.q(`SELECT `+tokenCols+` FROM tokens WHERE hash = ?`), HashSecret(secret)))
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrNotFound
	}
	if err != nil {
		return Token{}, fmt.Errorf("store: authenticate: %w", err)
	}
	if t.RevokedAt != nil {
		return t, ErrRevoked
	}
	return t, nil
}

// Token returns the token with id.
func (s *Store) Token(ctx context.Context, id string) (Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, s.q(`SELECT `+tokenCols+` FROM tokens WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrNotFound
	}
	if err != nil {
		return Token{}, fmt.Errorf("store: token: %w", err)
	}
	return t, nil
}

// Tokens lists the tokens, oldest first.
func (s *Store) Tokens(ctx context.Context) ([]Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: tokens: %w", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("store: tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken revokes the token with id (again is not an error).
func (s *Store) RevokeToken(ctx context.Context, id string) (Token, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`), toMicros(time.Now()), id)
	if err != nil {
		return Token{}, fmt.Errorf("store: revoke: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.Token(ctx, id); err != nil {
			return Token{}, err
		}
	}
	return s.Token(ctx, id)
}

const tunnelCols = `name, agent_token_id, upstream, host_header, basic_auth_user, basic_auth_hash, allow_cidrs, enabled, version, created_at, updated_at, type, remote_port`

func scanTunnel(row interface{ Scan(...any) error }) (Tunnel, error) {
	var t Tunnel
	var cidrs string
	var created, updated int64
	if err := row.Scan(&t.Name, &t.AgentTokenID, &t.Upstream, &t.HostHeader, &t.BasicAuthUser, &t.BasicAuthHash,
		&cidrs, &t.Enabled, &t.Version, &created, &updated, &t.Type, &t.RemotePort); err != nil {
		return Tunnel{}, err
	}
	if cidrs != "" {
		t.AllowCIDRs = strings.Split(cidrs, ",")
	}
	t.CreatedAt, t.UpdatedAt = fromMicros(created), fromMicros(updated)
	return t, nil
}

// CreateTunnel stores a new tunnel (ErrExists if the name is taken,
// ErrNotFound if its agent token does not exist, a *HostnameTakenError if
// one of its hostnames belongs to another tunnel, ErrBadHostname for an
// invalid one).
func (s *Store) CreateTunnel(ctx context.Context, t Tunnel) (Tunnel, error) {
	if _, err := s.Token(ctx, t.AgentTokenID); err != nil {
		return Tunnel{}, err
	}
	hostnames, err := normHostnames(t.Hostnames)
	if err != nil {
		return Tunnel{}, err
	}
	t.Hostnames = hostnames
	if t.Type == "" {
		t.Type = wire.TunnelHTTP
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	t.Version, t.CreatedAt, t.UpdatedAt = 1, now, now
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Tunnel{}, fmt.Errorf("store: create tunnel: %w", err)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, s.q(`INSERT INTO tunnels (`+tunnelCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		t.Name, t.AgentTokenID, t.Upstream, t.HostHeader, t.BasicAuthUser, t.BasicAuthHash,
		strings.Join(t.AllowCIDRs, ","), t.Enabled, t.Version, toMicros(now), toMicros(now), t.Type, t.RemotePort)
	if err != nil {
		if s.isUniqueViolation(err) {
			if isPortViolation(err) {
				return Tunnel{}, ErrPortTaken
			}
			return Tunnel{}, ErrExists
		}
		return Tunnel{}, fmt.Errorf("store: create tunnel: %w", err)
	}
	if err := s.setHostnames(ctx, tx, t.Name, t.Hostnames); err != nil {
		return Tunnel{}, fmt.Errorf("store: create tunnel: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Tunnel{}, fmt.Errorf("store: create tunnel: %w", err)
	}
	return t, nil
}

// isPortViolation tells a unique violation of tunnels_by_type_remote_port
// (SQLite names the columns, PostgreSQL the index).
func isPortViolation(err error) bool { return strings.Contains(err.Error(), "remote_port") }

func (s *Store) isUniqueViolation(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "SQLSTATE 23505")
}

// Tunnel returns the tunnel name.
func (s *Store) Tunnel(ctx context.Context, name string) (Tunnel, error) {
	t, err := scanTunnel(s.db.QueryRowContext(ctx, s.q(`SELECT `+tunnelCols+` FROM tunnels WHERE name = ?`), name))
	if errors.Is(err, sql.ErrNoRows) {
		return Tunnel{}, ErrNotFound
	}
	if err != nil {
		return Tunnel{}, fmt.Errorf("store: tunnel: %w", err)
	}
	if t.Hostnames, err = s.hostnamesOf(ctx, s.db, name); err != nil {
		return Tunnel{}, fmt.Errorf("store: tunnel: %w", err)
	}
	return t, nil
}

// Tunnels lists the tunnels by name; with agentTokenID, only that token's.
func (s *Store) Tunnels(ctx context.Context, agentTokenID string) ([]Tunnel, error) {
	query, args := `SELECT `+tunnelCols+` FROM tunnels ORDER BY name`, []any{}
	if agentTokenID != "" {
		query, args = `SELECT `+tunnelCols+` FROM tunnels WHERE agent_token_id = ? ORDER BY name`, []any{agentTokenID}
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: tunnels: %w", err)
	}
	defer rows.Close()
	out := []Tunnel{}
	for rows.Next() {
		t, err := scanTunnel(rows)
		if err != nil {
			return nil, fmt.Errorf("store: tunnels: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: tunnels: %w", err)
	}
	rows.Close()
	if len(out) == 0 {
		return out, nil
	}
	hosts, err := s.Hostnames(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: tunnels: %w", err)
	}
	at := make(map[string]int, len(out))
	for i, t := range out {
		at[t.Name] = i
	}
	for h, name := range hosts {
		if i, ok := at[name]; ok {
			out[i].Hostnames = append(out[i].Hostnames, h)
		}
	}
	for i := range out {
		slices.Sort(out[i].Hostnames)
	}
	return out, nil
}

// RemotePorts returns the remote ports the stored tunnels of type typ
// (wire.TunnelTCP or wire.TunnelUDP) have, each to its tunnel's name; a
// tunnel on any port (0) has none.
func (s *Store) RemotePorts(ctx context.Context, typ string) (map[int]string, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT remote_port, name FROM tunnels WHERE type = ? AND remote_port <> 0`), typ)
	if err != nil {
		return nil, fmt.Errorf("store: remote ports: %w", err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var port int
		var name string
		if err := rows.Scan(&port, &name); err != nil {
			return nil, fmt.Errorf("store: remote ports: %w", err)
		}
		out[port] = name
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: remote ports: %w", err)
	}
	return out, nil
}

// UpdateTunnel changes the tunnel name with fn inside a transaction that
// holds the row, so that concurrent updates apply one after the other and
// none is lost; the version goes up by one. fn must not change the name.
// A hostname fn adds that belongs to another tunnel is refused (a
// *HostnameTakenError), an invalid one too (ErrBadHostname).
func (s *Store) UpdateTunnel(ctx context.Context, name string, fn func(*Tunnel) error) (Tunnel, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Tunnel{}, fmt.Errorf("store: update tunnel: %w", err)
	}
	defer tx.Rollback()
	lock := ""
	if s.postgres {
		lock = " FOR UPDATE"
	}
	t, err := scanTunnel(tx.QueryRowContext(ctx, s.q(`SELECT `+tunnelCols+` FROM tunnels WHERE name = ?`+lock), name))
	if errors.Is(err, sql.ErrNoRows) {
		return Tunnel{}, ErrNotFound
	}
	if err != nil {
		return Tunnel{}, fmt.Errorf("store: update tunnel: %w", err)
	}
	if t.Hostnames, err = s.hostnamesOf(ctx, tx, name); err != nil {
		return Tunnel{}, fmt.Errorf("store: update tunnel: %w", err)
	}
	hostsBefore := slices.Clone(t.Hostnames)
	if err := fn(&t); err != nil {
		return Tunnel{}, err
	}
	if t.Name != name {
		return Tunnel{}, errors.New("store: a tunnel's name cannot change")
	}
	if t.Hostnames, err = normHostnames(t.Hostnames); err != nil {
		return Tunnel{}, err
	}
	if !slices.Equal(t.Hostnames, hostsBefore) {
		if err := s.setHostnames(ctx, tx, name, t.Hostnames); err != nil {
			return Tunnel{}, fmt.Errorf("store: update tunnel: %w", err)
		}
	}
	if t.AgentTokenID != "" {
		var one int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT 1 FROM tokens WHERE id = ?`), t.AgentTokenID).Scan(&one); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return Tunnel{}, ErrNotFound
			}
			return Tunnel{}, fmt.Errorf("store: update tunnel: %w", err)
		}
	}
	t.Version++
	t.UpdatedAt = time.Now().UTC().Truncate(time.Microsecond)
	_, err = tx.ExecContext(ctx, s.q(`UPDATE tunnels SET agent_token_id = ?, upstream = ?, host_header = ?, basic_auth_user = ?,
		basic_auth_hash = ?, allow_cidrs = ?, enabled = ?, version = ?, updated_at = ?, type = ?, remote_port = ? WHERE name = ?`),
		t.AgentTokenID, t.Upstream, t.HostHeader, t.BasicAuthUser, t.BasicAuthHash, strings.Join(t.AllowCIDRs, ","),
		t.Enabled, t.Version, toMicros(t.UpdatedAt), t.Type, t.RemotePort, name)
	if err != nil {
		if s.isUniqueViolation(err) && isPortViolation(err) {
			return Tunnel{}, ErrPortTaken
		}
		return Tunnel{}, fmt.Errorf("store: update tunnel: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Tunnel{}, fmt.Errorf("store: update tunnel: %w", err)
	}
	return t, nil
}

// DeleteTunnel deletes the tunnel name and returns what it was.
func (s *Store) DeleteTunnel(ctx context.Context, name string) (Tunnel, error) {
	t, err := s.Tunnel(ctx, name)
	if err != nil {
		return Tunnel{}, err
	}
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM tunnels WHERE name = ?`), name)
	if err != nil {
		return Tunnel{}, fmt.Errorf("store: delete tunnel: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Tunnel{}, ErrNotFound
	}
	return t, nil
}

// SeenAgent records that the agent of a token connected (or is still
// connected) to edge with version.
func (s *Store) SeenAgent(ctx context.Context, a Agent) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO agents (token_id, version, last_seen, edge) VALUES (?, ?, ?, ?)
		ON CONFLICT (token_id) DO UPDATE SET version = excluded.version, last_seen = excluded.last_seen, edge = excluded.edge`),
		a.TokenID, a.Version, toMicros(a.LastSeen), a.Edge)
	if err != nil {
		return fmt.Errorf("store: agent: %w", err)
	}
	return nil
}

// Agents lists what was last seen of each agent.
func (s *Store) Agents(ctx context.Context) ([]Agent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT token_id, version, last_seen, edge FROM agents ORDER BY token_id`)
	if err != nil {
		return nil, fmt.Errorf("store: agents: %w", err)
	}
	defer rows.Close()
	out := []Agent{}
	for rows.Next() {
		var a Agent
		var seen int64
		if err := rows.Scan(&a.TokenID, &a.Version, &seen, &a.Edge); err != nil {
			return nil, fmt.Errorf("store: agents: %w", err)
		}
		a.LastSeen = fromMicros(seen)
		out = append(out, a)
	}
	return out, rows.Err()
}
