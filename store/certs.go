package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Certificate storage: a small key/value table of files (certificates,
// private keys, ACME accounts, as an ACME library names them: keys with
// '/' between components) and a table of named locks with an expiry, so
// that certificates live in the store and edges sharing it share them.
// Package internal/certstore presents them to certmagic. The times of
// locks are the edges' clocks: edges sharing a store keep them in step
// (NTP), as any lease needs.

// CertFile is a file of the certificate storage. Value is nil when listed
// (CertFiles).
type CertFile struct {
	Key      string
	Value    []byte
	Size     int64
	Modified time.Time
}

// PutCertFile stores value at key, replacing what was there.
func (s *Store) PutCertFile(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{} // not NULL
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO cert_files (key, value, modified) VALUES (?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, modified = excluded.modified`),
		key, value, toMicros(time.Now()))
	if err != nil {
		return fmt.Errorf("store: put cert file: %w", err)
	}
	return nil
}

// CertFile returns the file at key (ErrNotFound if there is none).
func (s *Store) CertFile(ctx context.Context, key string) (CertFile, error) {
	f := CertFile{Key: key}
	var modified int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT value, modified FROM cert_files WHERE key = ?`), key).Scan(&f.Value, &modified)
	if errors.Is(err, sql.ErrNoRows) {
		return CertFile{}, ErrNotFound
	}
	if err != nil {
		return CertFile{}, fmt.Errorf("store: cert file: %w", err)
	}
	if f.Value == nil {
		f.Value = []byte{}
	}
	f.Size, f.Modified = int64(len(f.Value)), fromMicros(modified)
	return f, nil
}

// CertFiles lists, by key and without their values, the files whose keys
// start with prefix followed by '/' (all of them for prefix "").
func (s *Store) CertFiles(ctx context.Context, prefix string) ([]CertFile, error) {
	query, args := `SELECT key, LENGTH(value), modified FROM cert_files ORDER BY key`, []any{}
	if prefix != "" {
		// Keys under "a/b" are those from "a/b/" up to, not including,
		// "a/b0" ('0' follows '/'), byte by byte (see the migration).
		query, args = `SELECT key, LENGTH(value), modified FROM cert_files WHERE key >= ? AND key < ? ORDER BY key`,
			[]any{prefix + "/", prefix + "0"}
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: cert files: %w", err)
	}
	defer rows.Close()
	out := []CertFile{}
	for rows.Next() {
		var f CertFile
		var modified int64
		if err := rows.Scan(&f.Key, &f.Size, &modified); err != nil {
			return nil, fmt.Errorf("store: cert files: %w", err)
		}
		f.Modified = fromMicros(modified)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: cert files: %w", err)
	}
	return out, nil
}

// DeleteCertFiles deletes the file at key and every file under key/ (a
// key that is not there is not an error).
func (s *Store) DeleteCertFiles(ctx context.Context, key string) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM cert_files WHERE key = ? OR (key >= ? AND key < ?)`), key, key+"/", key+"0")
	if err != nil {
		return fmt.Errorf("store: delete cert files: %w", err)
	}
	return nil
}

// TryCertLock takes the lock name for holder until the time given, if
// nobody holds it or its holder's time ran out (a holder that crashed), and
// reports whether it did.
func (s *Store) TryCertLock(ctx context.Context, name, holder string, until time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO cert_locks (name, holder, expires) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires WHERE cert_locks.expires < ?`),
		name, holder, toMicros(until), toMicros(time.Now()))
	if err != nil {
		return false, fmt.Errorf("store: lock: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: lock: %w", err)
	}
	return n == 1, nil
}

// RenewCertLock moves the expiry of the lock name to until, if holder
// still holds it, and reports whether it does.
func (s *Store) RenewCertLock(ctx context.Context, name, holder string, until time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE cert_locks SET expires = ? WHERE name = ? AND holder = ?`), toMicros(until), name, holder)
	if err != nil {
		return false, fmt.Errorf("store: renew lock: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: renew lock: %w", err)
	}
	return n == 1, nil
}

// ReleaseCertLock releases the lock name if holder holds it (if another
// took it over meanwhile, it is left to that one).
func (s *Store) ReleaseCertLock(ctx context.Context, name, holder string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM cert_locks WHERE name = ? AND holder = ?`), name, holder); err != nil {
		return fmt.Errorf("store: unlock: %w", err)
	}
	return nil
}
