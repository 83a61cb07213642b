package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Custom hostnames: a stored tunnel may be served, besides at NAME.DOMAIN,
// at hostnames of its own (app.example.com), each of which belongs to at
// most one tunnel. They are kept as DNS names are compared: lowercase,
// without a trailing dot. Whether a hostname is under the edge's own
// domain (where names are tunnel names instead) is the edge's to check:
// the store does not know the domain.

// MaxHostnameLen is the longest DNS name, in bytes, without a trailing dot.
const MaxHostnameLen = 253

// ValidLabel reports whether label is a DNS label as the edge uses them:
// lowercase letters, digits and '-', not first or last, 1 to 63 bytes.
func ValidLabel(label string) bool {
	if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
		return false
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ValidHostname reports whether h is a hostname the store keeps for a
// tunnel: two labels or more (ValidLabel each, so lowercase), at most
// MaxHostnameLen bytes, no trailing dot, and not an IP address (its last
// label is not all digits). A certificate can be had for such a name.
func ValidHostname(h string) bool {
	if len(h) > MaxHostnameLen {
		return false
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if !ValidLabel(l) {
			return false
		}
	}
	last := labels[len(labels)-1]
	return strings.ContainsFunc(last, func(r rune) bool { return r < '0' || r > '9' })
}

// HostnameTakenError says that a hostname asked for a tunnel belongs to
// another. It matches ErrHostnameTaken.
type HostnameTakenError struct {
	Hostname string
	Tunnel   string // the tunnel it belongs to; "" when a concurrent change took it
}

func (e *HostnameTakenError) Error() string {
	if e.Tunnel == "" {
		return fmt.Sprintf("store: hostname %s belongs to another tunnel", e.Hostname)
	}
	return fmt.Sprintf("store: hostname %s belongs to tunnel %s", e.Hostname, e.Tunnel)
}

func (e *HostnameTakenError) Unwrap() error { return ErrHostnameTaken }

// normHostnames returns hs sorted, without duplicates, nil when empty, or
// an error matching ErrBadHostname for the first that is not valid.
func normHostnames(hs []string) ([]string, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	out := slices.Clone(hs)
	for _, h := range out {
		if !ValidHostname(h) {
			return nil, fmt.Errorf("%w: %q", ErrBadHostname, h)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// hostnamesOf returns the hostnames of tunnel name, sorted (nil if none).
func (s *Store) hostnamesOf(ctx context.Context, q querier, name string) ([]string, error) {
	rows, err := q.QueryContext(ctx, s.q(`SELECT hostname FROM tunnel_hostnames WHERE tunnel = ? ORDER BY hostname`), name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// setHostnames makes hs (normalized) the hostnames of tunnel name, within
// tx, or returns a *HostnameTakenError for one that belongs to another
// tunnel.
func (s *Store) setHostnames(ctx context.Context, tx *sql.Tx, name string, hs []string) error {
	for _, h := range hs {
		var owner string
		err := tx.QueryRowContext(ctx, s.q(`SELECT tunnel FROM tunnel_hostnames WHERE hostname = ?`), h).Scan(&owner)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case owner != name:
			return &HostnameTakenError{Hostname: h, Tunnel: owner}
		}
	}
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM tunnel_hostnames WHERE tunnel = ?`), name); err != nil {
		return err
	}
	for _, h := range hs {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO tunnel_hostnames (hostname, tunnel) VALUES (?, ?)`), h, name); err != nil {
			if s.isUniqueViolation(err) { // taken by a transaction that committed meanwhile
				return &HostnameTakenError{Hostname: h}
			}
			return err
		}
	}
	return nil
}

// Hostnames returns every custom hostname, with the tunnel it belongs to.
func (s *Store) Hostnames(ctx context.Context) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT hostname, tunnel FROM tunnel_hostnames`)
	if err != nil {
		return nil, fmt.Errorf("store: hostnames: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var h, t string
		if err := rows.Scan(&h, &t); err != nil {
			return nil, fmt.Errorf("store: hostnames: %w", err)
		}
		out[h] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: hostnames: %w", err)
	}
	return out, nil
}

// TunnelByHostname returns the tunnel that hostname h belongs to
// (ErrNotFound if none). h is looked up as given: lowercase, without a
// trailing dot.
func (s *Store) TunnelByHostname(ctx context.Context, h string) (Tunnel, error) {
	var name string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT tunnel FROM tunnel_hostnames WHERE hostname = ?`), h).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return Tunnel{}, ErrNotFound
	}
	if err != nil {
		return Tunnel{}, fmt.Errorf("store: tunnel by hostname: %w", err)
	}
	return s.Tunnel(ctx, name)
}
