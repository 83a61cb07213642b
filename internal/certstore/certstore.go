// Package certstore keeps certmagic's data (certificates, private keys,
// ACME accounts, OCSP staples) and its locks in the edge's store, so that
// a restart finds them and edges sharing a PostgreSQL store share them.
//
// Keys are certmagic's: components separated by '/', no leading or
// trailing slash; a "directory" is a key that prefixes others and exists
// only through them. Locks are rows with an expiry, which their holder
// moves forward while it holds them: a holder that crashed stops doing so,
// and its lock is taken over lockTTL after its last renewal.
package certstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/sluicehq/sluice/store"
)

// Lock timing: a held lock's expiry is lockTTL ahead and moved forward
// every lockTTL/3; a Lock call that finds the lock held tries again every
// lockPoll.
const (
	lockTTL  = 30 * time.Second
	lockPoll = time.Second
)

// Storage is a certmagic.Storage over a store. Its methods are safe for
// concurrent use; the locks it holds are in its held table, under mu.
type Storage struct {
	st *store.Store

	mu   sync.Mutex
	held map[string]*lease
}

// lease is a lock this Storage holds, with the goroutine that renews it.
type lease struct {
	holder string // unique to this Lock call
	stop   chan struct{}
	done   chan struct{}
}

var (
	_ certmagic.Storage   = (*Storage)(nil)
	_ certmagic.TryLocker = (*Storage)(nil)
)

// New returns certmagic's storage in st.
func New(st *store.Store) certmagic.Storage {
	return &Storage{st: st, held: map[string]*lease{}}
}

// clean is key without leading or trailing slashes.
func clean(key string) string { return strings.Trim(key, "/") }

// Store puts value at key.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.st.PutCertFile(ctx, clean(key), value); err != nil {
		return fmt.Errorf("certstore: store %s: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an error matching fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	f, err := s.st.CertFile(ctx, clean(key))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("certstore: load %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("certstore: load %s: %w", key, err)
	}
	return f.Value, nil
}

// Delete deletes key and, if it is a directory, everything under it. A
// key that does not exist is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	if err := s.st.DeleteCertFiles(ctx, clean(key)); err != nil {
		return fmt.Errorf("certstore: delete %s: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// Stat describes key: a file with its size and time, or a directory
// (IsTerminal false), or an error matching fs.ErrNotExist.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = clean(key)
	f, err := s.st.CertFile(ctx, key)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: f.Modified, Size: f.Size, IsTerminal: true}, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %s: %w", key, err)
	}
	under, err := s.st.CertFiles(ctx, key)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %s: %w", key, err)
	}
	if len(under) == 0 {
		return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %s: %w", key, fs.ErrNotExist)
	}
	latest := under[0].Modified
	for _, f := range under[1:] {
		if f.Modified.After(latest) {
			latest = f.Modified
		}
	}
	return certmagic.KeyInfo{Key: key, Modified: latest}, nil
}

// List returns the keys under prefix ("" for all): with recursive, every
// file and directory below it; without, those directly in it. A prefix
// with nothing under it gives an error matching fs.ErrNotExist, as a
// directory that is not there does (an existing file gives none).
func (s *Storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	prefix = clean(prefix)
	files, err := s.st.CertFiles(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("certstore: list %s: %w", prefix, err)
	}
	if len(files) == 0 {
		if _, err := s.st.CertFile(ctx, prefix); prefix != "" && err == nil {
			return []string{}, nil
		}
		return nil, fmt.Errorf("certstore: list %s: %w", prefix, fs.ErrNotExist)
	}
	base := ""
	if prefix != "" {
		base = prefix + "/"
	}
	seen := map[string]bool{}
	out := []string{}
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, f := range files {
		rel := strings.TrimPrefix(f.Key, base)
		if !recursive {
			first, _, _ := strings.Cut(rel, "/")
			add(base + first)
			continue
		}
		// Each directory on the way, then the file.
		for i := 0; i < len(rel); i++ {
			if rel[i] == '/' {
				add(base + rel[:i])
			}
		}
		add(f.Key)
	}
	return out, nil
}

// Lock takes the lock name, waiting while another holds it (here or at
// another edge) until it is released or its holder's time runs out, or
// until ctx ends.
func (s *Storage) Lock(ctx context.Context, name string) error {
	for {
		ok, err := s.TryLock(ctx, name)
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("certstore: lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// TryLock takes the lock name if it is free, and reports whether it did.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	b := make([]byte, 16)
	rand.Read(b)
	l := &lease{holder: hex.EncodeToString(b), stop: make(chan struct{}), done: make(chan struct{})}
	ok, err := s.st.TryCertLock(ctx, name, l.holder, time.Now().Add(lockTTL))
	if err != nil {
		return false, fmt.Errorf("certstore: lock %s: %w", name, err)
	}
	if !ok {
		return false, nil
	}
	s.mu.Lock()
	s.held[name] = l
	s.mu.Unlock()
	go s.renew(name, l)
	return true, nil
}

// renew moves the expiry of a held lock forward until Unlock stops it, or
// until the lock turns out to be another's (this process stalled past
// lockTTL and it was taken over).
func (s *Storage) renew(name string, l *lease) {
	defer close(l.done)
	t := time.NewTicker(lockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), lockTTL/3)
		ok, err := s.st.RenewCertLock(ctx, name, l.holder, time.Now().Add(lockTTL))
		cancel()
		if err == nil && !ok {
			return
		}
	}
}

// Unlock releases the lock name, which a Lock or TryLock of this Storage
// took.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	l := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("certstore: unlock %s: not locked here", name)
	}
	close(l.stop)
	<-l.done
	if err := s.st.ReleaseCertLock(ctx, name, l.holder); err != nil {
		return fmt.Errorf("certstore: unlock %s: %w", name, err)
	}
	return nil
}

// String names the storage in certmagic's logs.
func (s *Storage) String() string { return "sluice store (" + s.st.Backend() + ")" }
