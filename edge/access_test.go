package edge_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/store"
	"golang.org/x/crypto/bcrypt"
)

// Issue 11, finding 5: requests for random names cost no store query each
// (the edge knows the stored names), and leave the heap where it was. The
// full count (200,000) is in the benchmark command; 20,000 here.
func TestRandomNamesCostNoStoreQueryEach(t *testing.T) {
	const n = 20000
	e, _, _, _ := storeEdge(t, time.Minute)
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func(name string) int {
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/", nil)
		req.Host = name + ".localhost"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	get("warm")
	before := liveHeap()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n / 4 {
				if code := get(fmt.Sprintf("r%d-%d-%x", w, i, rand.Uint64())); code != http.StatusNotFound {
					t.Errorf("random name: %d", code)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	tr.CloseIdleConnections()
	after := liveHeap()
	page := e.metrics(t)
	one := metricValue(page, `sluice_access_store_queries_total{kind="tunnel"}`)
	list := metricValue(page, `sluice_access_store_queries_total{kind="list"}`)
	t.Logf("%d random names in %v: %v tunnel queries, %v list queries; live heap %+d bytes", n, elapsed, one, list, int64(after)-int64(before))
	if !strings.Contains(page, `sluice_access_store_queries_total{kind="list"}`) {
		t.Error("the store queries for visitor rules are not counted")
	}
	if one != 0 {
		t.Errorf("%v per-name store queries for names that are not stored, want 0", one)
	}
	// One list per 5 s (the cache's TTL) at most, plus the first.
	if maxList := 2 + elapsed.Seconds()/5; list > maxList {
		t.Errorf("%v list queries in %v, want at most %v", list, elapsed, maxList)
	}
	if grew := int64(after) - int64(before); grew > 5<<20 {
		t.Errorf("live heap grew by %d bytes, want at most 5 MB", grew)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// Issue 11, finding 7: wrong passwords from one address for one tunnel are
// answered 429 with Retry-After after a burst, without a bcrypt run each;
// another address is still checked; a wrong user name costs the same
// bcrypt run as a wrong password; right credentials pass.
func TestBasicAuthFailuresLimited(t *testing.T) {
	e, st, tokID, _ := storeEdge(t, time.Minute)
	hash, _ := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	if _, err := st.CreateTunnel(context.Background(), store.Tunnel{Name: "locked", AgentTokenID: tokID, Enabled: true,
		BasicAuthUser: "alice", BasicAuthHash: string(hash)}); err != nil {
		t.Fatal(err)
	}
	try := func(remote, user, pass string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/", nil)
		req.Host = "locked.localhost"
		req.SetBasicAuth(user, pass)
		if remote != "" {
			// A second client address: 127.0.0.2 is loopback too.
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(remote)}}
			c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
			defer c.CloseIdleConnections()
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	bcryptRuns := func() float64 { return metricValue(e.metrics(t), "sluice_basic_auth_bcrypt_total") }
	codes := []string{}
	for i := range 15 {
		user := "alice"
		if i%2 == 1 {
			user = "bob" // a wrong user name: refused the same way
		}
		before := bcryptRuns()
		resp := try("", user, "guess"+strconv.Itoa(i))
		codes = append(codes, strconv.Itoa(resp.StatusCode))
		want := 1.0 // a bcrypt run for a wrong user name as for a wrong password
		if resp.StatusCode == http.StatusTooManyRequests {
			want = 0 // a limited attempt costs none
		}
		if ran := bcryptRuns() - before; ran != want {
			t.Errorf("attempt %d (user %s, answered %d): %v bcrypt runs, want %v", i, user, resp.StatusCode, ran, want)
		}
	}
	if got, want := strings.Join(codes, ","), strings.Repeat("401,", 10)+"429,429,429,429,429"; got != want {
		t.Fatalf("15 wrong attempts: %s, want ten 401 then 429", got)
	}
	resp := try("", "alice", "guess")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("limited attempt: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := try("127.0.0.2", "alice", "right"); resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusTooManyRequests {
		t.Fatalf("another address with the right credentials: %d", resp.StatusCode)
	}
}
