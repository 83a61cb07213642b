package store

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

// Files are stored, replaced, listed by prefix (component-wise: "a" is
// not a prefix of "ab/c"), and deleted with what is under them.
func TestCertFiles(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		before := time.Now().Add(-time.Second)
		files := map[string][]byte{
			"a/b/c.crt": []byte("cert"), "a/b/c.key": {0, 1, 2, 0xff}, "a/x.json": []byte("{}"),
			"ab/c": []byte("other"), "a0": []byte("not under a"), "empty": {},
		}
		for k, v := range files {
			if err := s.PutCertFile(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
		for k, v := range files {
			f, err := s.CertFile(ctx, k)
			if err != nil || !bytes.Equal(f.Value, v) || f.Value == nil || f.Size != int64(len(v)) || f.Modified.Before(before) {
				t.Fatalf("CertFile(%q) = %+v, %v; want %q", k, f, err, v)
			}
		}
		if err := s.PutCertFile(ctx, "a/x.json", []byte(`{"v":2}`)); err != nil {
			t.Fatal(err)
		}
		if f, _ := s.CertFile(ctx, "a/x.json"); string(f.Value) != `{"v":2}` {
			t.Fatalf("replaced value: %q", f.Value)
		}
		if _, err := s.CertFile(ctx, "a/b"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("CertFile of a directory: %v", err)
		}
		keys := func(prefix string) []string {
			list, err := s.CertFiles(ctx, prefix)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, f := range list {
				if f.Value != nil || f.Size != int64(len(files[f.Key])) && f.Key != "a/x.json" {
					t.Errorf("listed %+v", f)
				}
				out = append(out, f.Key)
			}
			return out
		}
		if got, want := keys("a"), []string{"a/b/c.crt", "a/b/c.key", "a/x.json"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("CertFiles(a) = %q, want %q", got, want)
		}
		if got, want := keys(""), []string{"a/b/c.crt", "a/b/c.key", "a/x.json", "a0", "ab/c", "empty"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("CertFiles() = %q, want %q", got, want)
		}
		if got := keys("nope"); len(got) != 0 {
			t.Fatalf("CertFiles(nope) = %q", got)
		}
		if err := s.DeleteCertFiles(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if got, want := keys(""), []string{"a0", "ab/c", "empty"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("after deleting a: %q, want %q", got, want)
		}
		if err := s.DeleteCertFiles(ctx, "a"); err != nil {
			t.Fatalf("deleting again: %v", err)
		}
	})
}

// A lock has one holder at a time; it is taken over once its holder's
// time has run out (a holder that crashed), renewed only by its holder,
// and released only by its holder.
func TestCertLocks(t *testing.T) {
	t.Parallel()
	forBackends(t, func(t *testing.T, open func() *Store) {
		ctx := context.Background()
		s := open()
		later := time.Now().Add(time.Hour)
		try := func(name, holder string, until time.Time, want bool) {
			t.Helper()
			if ok, err := s.TryCertLock(ctx, name, holder, until); err != nil || ok != want {
				t.Fatalf("TryCertLock(%s, %s) = %v, %v; want %v", name, holder, ok, err, want)
			}
		}
		try("l", "a", later, true)
		try("l", "b", later, false)
		try("l", "a", later, false) // not reentrant
		try("other", "b", later, true)
		if err := s.ReleaseCertLock(ctx, "l", "b"); err != nil {
			t.Fatal(err)
		}
		try("l", "b", later, false) // b's release of a's lock did nothing
		if ok, err := s.RenewCertLock(ctx, "l", "b", later); err != nil || ok {
			t.Fatalf("renewed by another: %v %v", ok, err)
		}
		if ok, err := s.RenewCertLock(ctx, "l", "a", time.Now().Add(-time.Second)); err != nil || !ok {
			t.Fatalf("renew by its holder: %v %v", ok, err)
		}
		// a's time ran out (as if it had crashed): b takes the lock over,
		// and a can neither renew nor release it.
		try("l", "b", later, true)
		if ok, err := s.RenewCertLock(ctx, "l", "a", later); err != nil || ok {
			t.Fatalf("renewed by the old holder: %v %v", ok, err)
		}
		if err := s.ReleaseCertLock(ctx, "l", "a"); err != nil {
			t.Fatal(err)
		}
		try("l", "c", later, false)
		if err := s.ReleaseCertLock(ctx, "l", "b"); err != nil {
			t.Fatal(err)
		}
		try("l", "c", later, true)
	})
}
