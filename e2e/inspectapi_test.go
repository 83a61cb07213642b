package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The inspector's API as tests outside the project use it (the issue's
// interface): sluice http --inspect 127.0.0.1:IPORT, GET /api/requests,
// POST /api/requests/ID/replay; and sluice replay. A POST with a 5 MiB
// body through the tunnel replays byte-exact: the local server sees the
// same method, target, Host, headers and body.
func TestInspectorAPIReplay(t *testing.T) { forProtocols(t, testInspectorAPIReplay) }

func testInspectorAPIReplay(t *testing.T, proto string) {
	type seen struct {
		method, target, host string
		header               http.Header
		body                 []byte
	}
	var mu sync.Mutex
	var got []seen
	up := newTestUpstream(t)
	up.mux.HandleFunc("/upload/", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("upstream: %v", err)
		}
		mu.Lock()
		got = append(got, seen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), b})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"bytes":%d}`, len(b))
	})
	e := startEdge(t, "T")
	iport := freePort(t)
	iaddr := "127.0.0.1:" + strconv.Itoa(iport)
	agent := startAgent(t, e, proto, "insp"+proto, "T", up.port, "--inspect", iaddr, "--inspect-body-limit", "8MiB")
	if !agent.waitOutput(agent.stdout, iaddr, 15*time.Second) {
		t.Fatalf("the agent did not print its inspector's address %s:\n%s", iaddr, agent.stdout)
	}

	payload := randomBytes(t, 5<<20)
	c := tunnelClient(t, e.addr)
	hdr := http.Header{"Content-Type": {"application/octet-stream"}, "Authorization": {"Bearer s3cret"},
		"X-Multi": {"one", "two"}, "Cookie": {"a=1"}}
	resp, body := do(t, c, "POST", e.publicURL("insp"+proto)+"/upload/blob?v=1&w=%2F", payload, hdr)
	if resp.StatusCode != 200 || string(body) != `{"bytes":5242880}` {
		t.Fatalf("through the tunnel: %d %s", resp.StatusCode, body)
	}

	api := &http.Client{Timeout: time.Minute}
	defer api.CloseIdleConnections()
	apiURL := "http://" + iaddr

	// GET /api/requests: the contract's fields, once the record is done.
	var list []map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := api.Get(apiURL + "/api/requests")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /api/requests: %d %s", resp.StatusCode, b)
		}
		list = nil
		if err := json.Unmarshal(b, &list); err != nil {
			t.Fatalf("GET /api/requests: not a JSON array: %v: %.300s", err, b)
		}
		if len(list) == 1 && list[0]["state"] == "done" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no finished record in 30 s: %.500s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	first := list[0]
	checkRequestObject(t, first)
	id := first["id"].(string)
	if first["method"] != "POST" || first["path"] != "/upload/blob?v=1&w=%2F" || first["status"] != 200.0 ||
		first["request_body_size"] != float64(5<<20) || first["response_body_size"] != float64(len(`{"bytes":5242880}`)) {
		t.Fatalf("the record: %v", first)
	}
	if v := first["request_headers"].(map[string]any)["X-Multi"]; fmt.Sprint(v) != "[one two]" {
		t.Fatalf("request_headers X-Multi: %v", v)
	}
	if v := first["response_headers"].(map[string]any)["Content-Type"]; fmt.Sprint(v) != "[application/json]" {
		t.Fatalf("response_headers Content-Type: %v", v)
	}

	// POST /api/requests/ID/replay: the new request's object.
	resp, err := api.Post(apiURL+"/api/requests/"+id+"/replay", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var replay map[string]any
	if resp.StatusCode/100 != 2 || json.Unmarshal(b, &replay) != nil {
		t.Fatalf("replay: %d %s", resp.StatusCode, b)
	}
	checkRequestObject(t, replay)
	if replay["id"] == id || replay["replay_of"] != id || replay["status"] != 200.0 || replay["request_body_size"] != float64(5<<20) {
		t.Fatalf("the replay's object: %v", replay)
	}

	// sluice replay: a third time, from the command line.
	p := startProc(t, "replay", "replay", id, "--inspect", iaddr)
	<-p.done
	want := regexp.MustCompile(`^Replayed request ` + id + ` as request [0-9]+: POST /upload/blob\?v=1&w=%2F -> 200 OK in [0-9.]+ m?s\n$`)
	if p.err != nil || !want.MatchString(p.stdout.String()) {
		t.Fatalf("sluice replay: %v\nstdout: %s\nstderr: %s", p.err, p.stdout, p.stderr)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("the local server saw %d requests", len(got))
	}
	for i, g := range got {
		if g.method != "POST" || g.target != got[0].target || g.host != got[0].host || !bytes.Equal(g.body, payload) {
			t.Errorf("request %d: %s %s Host %s, %d bytes (equal: %v)", i, g.method, g.target, g.host, len(g.body), bytes.Equal(g.body, payload))
		}
		if !maps.EqualFunc(g.header, got[0].header, slices.Equal) {
			t.Errorf("request %d's headers differ:\n%v\nfirst:\n%v", i, g.header, got[0].header)
		}
	}
	if got[0].header.Get("Authorization") != "Bearer s3cret" || got[0].header.Get("X-Forwarded-For") == "" {
		t.Errorf("the first request's headers: %v", got[0].header)
	}
}

// checkRequestObject checks the contract's fields of a request object by
// their JSON types.
func checkRequestObject(t *testing.T, obj map[string]any) {
	t.Helper()
	for _, k := range []string{"id", "method", "path"} {
		if _, ok := obj[k].(string); !ok {
			t.Errorf("%s: %#v, want a string", k, obj[k])
		}
	}
	for _, k := range []string{"status", "duration_ms", "request_body_size", "response_body_size"} {
		if _, ok := obj[k].(float64); !ok {
			t.Errorf("%s: %#v, want a number", k, obj[k])
		}
	}
	for _, k := range []string{"request_headers", "response_headers"} {
		h, ok := obj[k].(map[string]any)
		if !ok {
			t.Errorf("%s: %#v, want an object", k, obj[k])
			continue
		}
		for name, vs := range h {
			arr, ok := vs.([]any)
			if !ok {
				t.Errorf("%s[%s]: %#v, want an array", k, name, vs)
			}
			for _, v := range arr {
				if _, ok := v.(string); !ok {
					t.Errorf("%s[%s]: %#v, want strings", k, name, v)
				}
			}
		}
	}
}
