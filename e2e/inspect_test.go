package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// startInspected runs the contract's command line, "sluice http PORT
// --edge URL --token T --name NAME --inspect 127.0.0.1:IPORT" (with
// extra flags), and returns the agent and the inspector's base URL, once
// the tunnel is up.
func startInspected(t *testing.T, e *edgeProc, name string, upstreamPort int, extra ...string) (*proc, string) {
	t.Helper()
	return startInspectedEnv(t, e, nil, name, upstreamPort, extra...)
}

// startInspectedEnv is startInspected with extra environment variables.
func startInspectedEnv(t *testing.T, e *edgeProc, env []string, name string, upstreamPort int, extra ...string) (*proc, string) {
	t.Helper()
	iaddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	args := append([]string{"http", strconv.Itoa(upstreamPort), "--edge", "http://" + e.addr, "--token", "T", "--name", name, "--inspect", iaddr}, extra...)
	p := startProcEnv(t, "agent "+name, env, args...)
	if !p.waitOutput(p.stdout, "Forwarding "+e.publicURL(name), 15*time.Second) {
		t.Fatalf("agent %s never forwarded (exited: %v, %v)\nstdout: %s\nstderr: %s", name, p.exited(), p.err, p.stdout, p.stderr)
	}
	if extra == nil && !bytes.Contains([]byte(p.stdout.String()), []byte("Inspector  http://"+iaddr+"\n")) {
		t.Fatalf("the inspector's address is not printed: %q", p.stdout)
	}
	return p, "http://" + iaddr
}

// inspectorGet GETs path of the inspector and decodes its JSON into v.
func inspectorGet(t *testing.T, base, path string, v any) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// contractRequest is what the interface used by tests outside the project
// promises of each object of GET /api/requests.
type contractRequest struct {
	ID               *string              `json:"id"`
	Method           *string              `json:"method"`
	Path             *string              `json:"path"`
	Status           *int                 `json:"status"`
	DurationMS       *float64             `json:"duration_ms"`
	RequestHeaders   *map[string][]string `json:"request_headers"`
	ResponseHeaders  *map[string][]string `json:"response_headers"`
	RequestBodySize  *int64               `json:"request_body_size"`
	ResponseBodySize *int64               `json:"response_body_size"`
	State            string               `json:"state"`
	ReplayOf         string               `json:"replay_of"`
}

func (r contractRequest) complete() bool {
	return r.ID != nil && r.Method != nil && r.Path != nil && r.Status != nil && r.DurationMS != nil &&
		r.RequestHeaders != nil && r.ResponseHeaders != nil && r.RequestBodySize != nil && r.ResponseBodySize != nil
}

// The contract: the agent's inspector lists a request made through the
// tunnel with the promised fields, newest first, and replays it to the
// local server with the same method, path, headers and body.
func TestInspectorContract(t *testing.T) {
	t.Parallel()
	up := newTestUpstream(t)
	var mu sync.Mutex
	var seen []*http.Request
	var bodies []string
	up.mux.HandleFunc("/orders", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen, bodies = append(seen, r), append(bodies, string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"ok":true}`)
	})
	e := startEdge(t, "T")
	_, inspector := startInspected(t, e, "contract", up.port)
	c := tunnelClient(t, e.addr)
	hdr := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer abc"}, "X-Multi": {"1", "2"}}
	resp, _ := do(t, c, "POST", e.publicURL("contract")+"/orders?x=1", []byte(`{"item":42}`), hdr)
	if resp.StatusCode != 201 {
		t.Fatalf("through the tunnel: %d", resp.StatusCode)
	}
	do(t, c, "GET", e.publicURL("contract")+"/missing", nil, nil)

	var list []contractRequest
	deadline := time.Now().Add(30 * time.Second)
	for {
		inspectorGet(t, inspector, "/api/requests", &list)
		if len(list) == 2 && list[0].State == "done" && list[1].State == "done" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the inspector lists %+v", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, r := range list {
		if !r.complete() {
			t.Fatalf("an object without a promised field: %+v", r)
		}
	}
	first, second := list[1], list[0] // newest first
	if *second.Path != "/missing" || *first.Method != "POST" || *first.Path != "/orders?x=1" || *first.Status != 201 ||
		*first.RequestBodySize != 11 || *first.ResponseBodySize != 11 {
		t.Fatalf("the POST: %+v", first)
	}
	if rh := *first.RequestHeaders; fmt.Sprint(rh["X-Multi"]) != "[1 2]" || rh["Authorization"][0] != "Bearer abc" {
		t.Fatalf("request headers %v", rh)
	}
	if fmt.Sprint((*first.ResponseHeaders)["Content-Type"]) != "[application/json]" {
		t.Fatalf("response headers %v", *first.ResponseHeaders)
	}

	resp, err := http.Post(inspector+"/api/requests/"+*first.ID+"/replay", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var replay contractRequest
	if err := json.Unmarshal(body, &replay); err != nil || resp.StatusCode/100 != 2 || !replay.complete() {
		t.Fatalf("replay: %d %s (%v)", resp.StatusCode, body, err)
	}
	if *replay.ID == *first.ID || replay.ReplayOf != *first.ID || *replay.Status != 201 {
		t.Fatalf("the replay's object: %+v", replay)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || bodies[1] != bodies[0] || seen[1].Method != "POST" || seen[1].URL.RequestURI() != "/orders?x=1" {
		t.Fatalf("the local server saw %d requests, bodies %q", len(seen), bodies)
	}
	for _, name := range []string{"Content-Type", "Authorization", "X-Multi", "User-Agent"} {
		if fmt.Sprint(seen[1].Header[name]) != fmt.Sprint(seen[0].Header[name]) {
			t.Errorf("replayed %s: %v, first %v", name, seen[1].Header[name], seen[0].Header[name])
		}
	}
}

// A 1 GiB download through the tunnel with the inspector on keeps the
// agent's memory within a few MiB of the same download with it off, and
// the record says the body was cut at the limit.
func TestInspectorMemoryBounded(t *testing.T) {
	t.Parallel()
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	want := patternSum(size)
	up := newTestUpstream(t)
	up.mux.HandleFunc("GET /bulk", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		io.CopyN(w, &pattern{}, size)
	})
	e := startEdge(t, "T")
	c := tunnelClient(t, e.addr)
	// growth downloads through agent a and returns its RSS before and at
	// its peak, in KiB.
	growth := func(name string, a *proc) (before, peak int64) {
		pid := a.cmd.Process.Pid
		do(t, c, "GET", e.publicURL(name)+"/missing", nil, nil) // warm: the first request's allocations
		before = rssKB(pid)
		stop := make(chan struct{})
		peakc := peakRSS([]int{pid}, stop)
		resp, err := c.Get(e.publicURL(name) + "/bulk")
		if err != nil {
			t.Fatal(err)
		}
		h := crc32.New(crcTable)
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		close(stop)
		if err != nil || n != size || h.Sum32() != want {
			t.Fatalf("%s: downloaded %d of %d bytes (err %v), digest match %v", name, n, size, err, h.Sum32() == want)
		}
		return before, <-peakc
	}
	// One after the other: the machine's load is not shared between them.
	// Both with Go's own pacing (GOGC set turns off the servers' floor
	// under the collector's goal): the floor lets garbage grow to 16 MiB
	// in the agent that allocates more, which is the collector's
	// headroom, not memory the inspector keeps.
	env := []string{"GOGC=100"}
	off := startAgentEnv(t, e, env, "v2", "off", "T", up.port, "--inspect", "off", "--quiet")
	offBefore, offPeak := growth("off", off)
	off.kill()
	on, inspector := startInspectedEnv(t, e, env, "on", up.port, "--protocol", "v2", "--quiet")
	onBefore, onPeak := growth("on", on)
	t.Logf("agent RSS during a %d MiB download: inspector off %d -> %d MiB, on %d -> %d MiB",
		size>>20, offBefore>>10, offPeak>>10, onBefore>>10, onPeak>>10)
	const slack = 10 << 10 // KiB: a few MiB, for the 1 MiB kept and the GC's timing
	if onPeak-onBefore > offPeak-offBefore+slack {
		t.Errorf("with the inspector the agent grew by %d MiB, without by %d MiB", (onPeak-onBefore)>>10, (offPeak-offBefore)>>10)
	}

	var list []struct {
		Path      string `json:"path"`
		State     string `json:"state"`
		Size      int64  `json:"response_body_size"`
		Captured  int64  `json:"response_body_captured"`
		Truncated bool   `json:"response_body_truncated"`
	}
	inspectorGet(t, inspector, "/api/requests", &list)
	if len(list) != 2 || list[0].Path != "/bulk" || list[0].State != "done" || list[0].Size != size || list[0].Captured != 1<<20 || !list[0].Truncated {
		t.Fatalf("the inspector's records: %+v", list)
	}
}
