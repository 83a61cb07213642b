package edge

import (
	"strconv"
	"testing"
	"testing/synctest"
	"time"
)

// The rules cache holds at most maxAccessEntries tunnels, dropping the
// least recently used.
func TestAccessCacheBounded(t *testing.T) {
	var c accessCache
	for i := range 3 * maxAccessEntries {
		c.put("n"+strconv.Itoa(i), &accessRules{})
		if i == maxAccessEntries {
			c.get("n0") // used: stays
		}
	}
	if n := c.len(); n != maxAccessEntries {
		t.Fatalf("%d entries, want the bound %d", n, maxAccessEntries)
	}
	if c.get("n1") != nil {
		t.Error("the least recently used entry was kept")
	}
	if c.get("n"+strconv.Itoa(3*maxAccessEntries-1)) == nil {
		t.Error("the newest entry was dropped")
	}
}

// Failed attempts: authFailBurst at once, then one per authFailEvery; the
// table of addresses is bounded.
func TestAuthFailuresLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var f authFailures
		for i := range authFailBurst {
			if f.blocked("ip\x00t") > 0 {
				t.Fatalf("blocked after %d failures", i)
			}
			f.fail("ip\x00t")
		}
		wait := f.blocked("ip\x00t")
		if wait <= 0 || wait > authFailEvery {
			t.Fatalf("after the burst: wait %v, want (0, %v]", wait, authFailEvery)
		}
		if f.blocked("ip\x00other") > 0 || f.blocked("ip2\x00t") > 0 {
			t.Fatal("another tunnel or address is blocked too")
		}
		time.Sleep(wait)
		if f.blocked("ip\x00t") > 0 {
			t.Fatal("still blocked after the wait it announced")
		}
		for i := range 2 * maxAuthFailKeys {
			f.fail(strconv.Itoa(i))
		}
		if n := f.lru.Len(); n != maxAuthFailKeys {
			t.Fatalf("%d keys, want the bound %d", n, maxAuthFailKeys)
		}
	})
}
