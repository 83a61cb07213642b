package certstore

import (
	"context"
	"errors"
	"io/fs"
	"reflect"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicehq/sluice/internal/pgtest"
	"github.com/sluicehq/sluice/store"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// forBackends runs test with a store on SQLite and one on PostgreSQL
// (pgtest: skipped visibly without a server, except under CI); open
// returns another store over the same data, as a second edge has.
func forBackends(t *testing.T, test func(t *testing.T, open func() *store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		test(t, func() *store.Store { return openOrFail(t, dir) })
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		target := pgtest.Schema(t)
		test(t, func() *store.Store { return openOrFail(t, target) })
	})
}

func openOrFail(t *testing.T, target string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Files and directories behave as certmagic's FileStorage's do: Load,
// Stat and List of what is not there match fs.ErrNotExist, Delete of it
// is not an error, a directory exists through the files under it, and
// what one edge stores the other loads.
func TestFiles(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *store.Store) {
		ctx := context.Background()
		s, other := New(open()), New(open())
		put := map[string]string{
			"certificates/acme/example.com/example.com.crt":  "CERT",
			"certificates/acme/example.com/example.com.key":  "KEY",
			"certificates/acme/example.com/example.com.json": "{}",
			"certificates/acme/other.org/other.org.crt":      "CERT2",
			"acme/acme/users/me/me.json":                     "account",
			"ocsp/example.com-123":                           "",
		}
		for k, v := range put {
			if err := s.Store(ctx, k, []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		for k, v := range put {
			if got, err := other.Load(ctx, k); err != nil || string(got) != v {
				t.Fatalf("Load(%q) = %q, %v; want %q", k, got, err, v)
			}
		}
		for _, k := range []string{"nope", "certificates/acme", "certificates/acme/example.com/example.com"} {
			if _, err := s.Load(ctx, k); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load(%q): %v, want fs.ErrNotExist", k, err)
			}
		}
		info, err := s.Stat(ctx, "certificates/acme/example.com/example.com.crt")
		if err != nil || !info.IsTerminal || info.Size != 4 || info.Key != "certificates/acme/example.com/example.com.crt" || info.Modified.IsZero() {
			t.Fatalf("Stat(file) = %+v, %v", info, err)
		}
		if info, err := s.Stat(ctx, "certificates/acme"); err != nil || info.IsTerminal || info.Key != "certificates/acme" {
			t.Fatalf("Stat(directory) = %+v, %v", info, err)
		}
		if _, err := s.Stat(ctx, "certificates/acm"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Stat(a prefix that is not a component): %v", err)
		}
		for k, want := range map[string]bool{"certificates": true, "certificates/acme/other.org": true, "ocsp/example.com-123": true,
			"certificates/acme/other": false, "certificate": false, "nope": false} {
			if got := s.Exists(ctx, k); got != want {
				t.Errorf("Exists(%q) = %v", k, got)
			}
		}
		list := func(prefix string, recursive bool) []string {
			t.Helper()
			got, err := s.List(ctx, prefix, recursive)
			if err != nil {
				t.Fatalf("List(%q, %v): %v", prefix, recursive, err)
			}
			slices.Sort(got)
			return got
		}
		if got, want := list("certificates", false), []string{"certificates/acme"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("List(certificates) = %q, want %q", got, want)
		}
		if got, want := list("certificates/acme/", false), []string{"certificates/acme/example.com", "certificates/acme/other.org"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("List(certificates/acme) = %q, want %q", got, want)
		}
		if got, want := list("certificates/acme/example.com", false), []string{"certificates/acme/example.com/example.com.crt",
			"certificates/acme/example.com/example.com.json", "certificates/acme/example.com/example.com.key"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("List(certificates/acme/example.com) = %q, want %q", got, want)
		}
		if got, want := list("certificates", true), []string{"certificates/acme", "certificates/acme/example.com",
			"certificates/acme/example.com/example.com.crt", "certificates/acme/example.com/example.com.json", "certificates/acme/example.com/example.com.key",
			"certificates/acme/other.org", "certificates/acme/other.org/other.org.crt"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("List(certificates, recursive) = %q, want %q", got, want)
		}
		if got, want := list("", false), []string{"acme", "certificates", "ocsp"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("List(\"\") = %q, want %q", got, want)
		}
		if _, err := s.List(ctx, "nope", true); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("List(nope): %v", err)
		}
		if got := list("ocsp/example.com-123", false); len(got) != 0 {
			t.Fatalf("List(a file) = %q", got)
		}
		if err := s.Store(ctx, "acme/acme/users/me/me.json", []byte("account v2")); err != nil {
			t.Fatal(err)
		}
		if got, _ := other.Load(ctx, "acme/acme/users/me/me.json"); string(got) != "account v2" {
			t.Fatalf("overwritten value: %q", got)
		}
		if err := other.Delete(ctx, "certificates/acme/example.com"); err != nil {
			t.Fatal(err)
		}
		if s.Exists(ctx, "certificates/acme/example.com") || s.Exists(ctx, "certificates/acme/example.com/example.com.key") || !s.Exists(ctx, "certificates/acme/other.org/other.org.crt") {
			t.Fatal("Delete of a directory")
		}
		if err := s.Delete(ctx, "certificates/acme/example.com"); err != nil {
			t.Fatalf("Delete of what is not there: %v", err)
		}
		if err := s.Delete(ctx, "ocsp/example.com-123"); err != nil || s.Exists(ctx, "ocsp") {
			t.Fatalf("Delete of a file: %v", err)
		}
	})
}

// A lock has one holder across edges; Lock waits for its release; a lock
// whose holder crashed is taken once its time has run out; Lock gives up
// when its context ends; Unlock of a lock not held here is an error.
func TestLocks(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *store.Store) {
		ctx := context.Background()
		st := open()
		a, b := New(st).(*Storage), New(open()).(*Storage)
		if err := a.Lock(ctx, "issue_cert_example.com"); err != nil {
			t.Fatal(err)
		}
		if ok, err := b.TryLock(ctx, "issue_cert_example.com"); err != nil || ok {
			t.Fatalf("TryLock of a held lock: %v, %v", ok, err)
		}
		if ok, err := a.TryLock(ctx, "issue_cert_example.com"); err != nil || ok {
			t.Fatalf("TryLock of a lock held by the same storage: %v, %v", ok, err)
		}
		short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		err := b.Lock(short, "issue_cert_example.com")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock with an ended context: %v", err)
		}
		got := make(chan error, 1)
		go func() { got <- b.Lock(ctx, "issue_cert_example.com") }()
		select {
		case err := <-got:
			t.Fatalf("Lock of a held lock returned %v", err)
		default:
		}
		if err := a.Unlock(ctx, "issue_cert_example.com"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("Lock did not get a released lock")
		}
		if err := b.Unlock(ctx, "issue_cert_example.com"); err != nil {
			t.Fatal(err)
		}
		if err := b.Unlock(ctx, "issue_cert_example.com"); err == nil {
			t.Fatal("a second Unlock succeeded")
		}
		// A holder that crashed: its lock's time is over.
		if ok, err := st.TryCertLock(ctx, "crashed", "gone", time.Now().Add(-time.Millisecond)); err != nil || !ok {
			t.Fatal(ok, err)
		}
		done, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := a.Lock(done, "crashed"); err != nil {
			t.Fatalf("Lock of a crashed holder's lock: %v", err)
		}
		if err := a.Unlock(ctx, "crashed"); err != nil {
			t.Fatal(err)
		}
	})
}

// A held lock is renewed while held, however long: another edge never
// takes it over; once its holder stops renewing (a crash), it is taken
// lockTTL later.
func TestLockRenewed(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		dir := t.TempDir()
		st := openOrFail(t, dir)
		a, b := New(st).(*Storage), New(st).(*Storage)
		if err := a.Lock(ctx, "l"); err != nil {
			t.Fatal(err)
		}
		// Between two renewals (every lockTTL/3), the last at 10*lockTTL.
		time.Sleep(10*lockTTL + lockTTL/6)
		if ok, err := b.TryLock(ctx, "l"); err != nil || ok {
			t.Fatalf("a renewed lock was taken after %v: %v, %v", 10*lockTTL, ok, err)
		}
		// a crashes: its renewal stops, its row stays.
		a.mu.Lock()
		l := a.held["l"]
		a.mu.Unlock()
		close(l.stop)
		<-l.done
		time.Sleep(lockTTL - lockTTL/6 - lockPoll) // its time runs out lockTTL after its last renewal
		if ok, err := b.TryLock(ctx, "l"); err != nil || ok {
			t.Fatalf("taken before its time ran out: %v, %v", ok, err)
		}
		start := time.Now()
		if err := b.Lock(ctx, "l"); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited > 2*lockPoll {
			t.Fatalf("taken %v after the first refusal", waited)
		}
		if err := b.Unlock(ctx, "l"); err != nil {
			t.Fatal(err)
		}
		st.Close()
	})
}
