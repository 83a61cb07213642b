package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A remotely managed agent ("sluice agent"): a tunnel created with
// "sluice tunnels create" while it runs is served within a second (pushed,
// not polled); after its upstream changes, new requests go to the new one
// while an SSE stream through another tunnel of the same agent stays open;
// a deleted tunnel stops; a revoked token stops the agent with a message.
func TestManagedAgent(t *testing.T) {
	t.Parallel()
	upA, upB := namedUpstream(t, "upstream A"), namedUpstream(t, "upstream B")
	feed := newTestUpstream(t)
	tick := make(chan struct{})
	feed.mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for i := 1; ; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-feed.stop:
				return
			case <-tick:
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
			}
		}
	})
	e := startEdge(t, "", "--data", t.TempDir(), "--admin-token", "A")
	edgeURL := "http://" + e.addr
	admin := []string{"--edge", edgeURL, "--admin-token", "A"}
	r := run(t, 20*time.Second, append([]string{"tokens", "create"}, admin...)...)
	secret := strings.TrimSpace(r.stdout)
	tunnels := func(args ...string) {
		t.Helper()
		r := run(t, 20*time.Second, append(append([]string{"tunnels"}, args...), admin...)...)
		if r.code != 0 {
			t.Fatalf("tunnels %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	tunnels("create", "feed", "--upstream", "http://127.0.0.1:"+strconv.Itoa(feed.port), "--agent-token", secret)

	a := startProc(t, "managed agent", "agent", "--edge", edgeURL, "--token", secret)
	c := tunnelClient(t, e.addr)
	waitServed := func(name, want string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			resp, body, err := tryDo(c, "GET", e.publicURL(name)+"/", nil, nil, 2*time.Second)
			if err == nil && resp.StatusCode == 200 && string(body) == want {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("%s did not serve %q within %v (last: %v %q %v)\nagent stderr: %s", name, want, within, resp, body, err, a.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !a.waitOutput(a.stderr, "Forwarding "+e.publicURL("feed"), 15*time.Second) {
		t.Fatalf("the agent did not bring up its tunnel\nstderr: %s", a.stderr)
	}

	// An SSE stream through "feed", held open through what follows.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.publicURL("feed")+"/events", nil)
	sresp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	events := bufio.NewReader(sresp.Body)
	expect := func(n int) {
		t.Helper()
		tick <- struct{}{}
		want := fmt.Sprintf("data: %d", n)
		for {
			line, err := events.ReadString('\n')
			if err != nil {
				t.Fatalf("the SSE stream through the other tunnel broke: %v", err)
			}
			if strings.TrimSpace(line) == want {
				return
			}
		}
	}
	expect(1)

	// Created while the agent runs: served within a second.
	tunnels("create", "web", "--upstream", "http://127.0.0.1:"+strconv.Itoa(upA.port), "--agent-token", secret)
	took := waitServed("web", "upstream A", time.Second)
	t.Logf("a created tunnel served %v after sluice tunnels create returned", took)
	expect(2)

	// Upstream changed: new requests go to B; the stream is still open.
	tunnels("update", "web", "--upstream", "http://127.0.0.1:"+strconv.Itoa(upB.port))
	waitServed("web", "upstream B", 2*time.Second)
	expect(3)

	// Deleted: the tunnel stops being served by this agent.
	tunnels("delete", "web")
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _, err := tryDo(c, "GET", e.publicURL("web")+"/", nil, nil, 2*time.Second)
		if err == nil && resp.StatusCode != 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a deleted tunnel is still served: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	expect(4)

	// Revoked: the agent stops with a clear message.
	r = run(t, 20*time.Second, append([]string{"tokens", "list"}, admin...)...)
	id := ""
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "tok_") {
			id = f[0]
		}
	}
	if r := run(t, 20*time.Second, append([]string{"tokens", "revoke", id}, admin...)...); r.code != 0 {
		t.Fatalf("revoke: %q", r.stderr)
	}
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent kept running after its token was revoked\nstderr: %s", a.stderr)
	}
	if a.err == nil || !strings.Contains(a.stderr.String(), "revoked") {
		t.Fatalf("after revocation: exit %v, stderr %s", a.err, a.stderr)
	}
	io.Copy(io.Discard, sresp.Body)
}

// The edge restarted on its SQLite store: tokens and tunnels are kept, and
// the managed agent comes back by itself, tunnel and push channel.
func TestManagedAgentEdgeRestart(t *testing.T) {
	t.Parallel()
	up := namedUpstream(t, "still here")
	data := t.TempDir()
	e := startEdge(t, "", "--data", data, "--admin-token", "A")
	edgeURL := "http://" + e.addr
	admin := []string{"--edge", edgeURL, "--admin-token", "A"}
	secret := strings.TrimSpace(run(t, 20*time.Second, append([]string{"tokens", "create"}, admin...)...).stdout)
	if r := run(t, 20*time.Second, append([]string{"tunnels", "create", "kept", "--upstream", "http://127.0.0.1:" + strconv.Itoa(up.port), "--agent-token", secret}, admin...)...); r.code != 0 {
		t.Fatalf("tunnels create: %q", r.stderr)
	}
	a := startProc(t, "managed agent", "agent", "--edge", edgeURL, "--token", secret)
	c := tunnelClient(t, e.addr)
	served := func(e *edgeProc, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			resp, body, err := tryDo(c, "GET", e.publicURL("kept")+"/", nil, nil, 2*time.Second)
			if err == nil && resp.StatusCode == 200 && string(body) == "still here" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("kept not served within %v: %v %v\nagent stderr: %s", within, resp, err, a.stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	served(e, 15*time.Second)
	e.kill()
	e2, err := startEdgeAt(t, e.port, "", "--data", data, "--admin-token", "A")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	served(e2, 30*time.Second)
	t.Logf("served again %v after the edge restarted", time.Since(start).Round(time.Millisecond))
	for strings.Count(a.stderr.String(), "push channel connected") < 2 {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the push channel did not reconnect\nstderr: %s", a.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("push channel back %v after the restart", time.Since(start).Round(time.Millisecond))
}

// Issue 11, finding 1: a holder of the edge's --token squats a name nobody
// stored yet, with its own upstream. The admin then creates that tunnel
// for a managed agent's token: the squatter is retired at once (it stops,
// saying why), and the owner's managed agent serves the name. The time
// from "sluice tunnels create" to the owner's first answer is logged (the
// issue asks for under a second on a quiet machine; the ceiling here is
// for a busy one).
func TestCreateTakesSquattedName(t *testing.T) {
	t.Parallel()
	owner, squat := namedUpstream(t, "owner"), namedUpstream(t, "squatter")
	e := startEdge(t, "T", "--data", t.TempDir(), "--admin-token", "A")
	edgeURL := "http://" + e.addr
	admin := []string{"--edge", edgeURL, "--admin-token", "A"}
	secret := strings.TrimSpace(run(t, 20*time.Second, append([]string{"tokens", "create"}, admin...)...).stdout)
	m := startProc(t, "managed agent", "agent", "--edge", edgeURL, "--token", secret)
	if !m.waitOutput(m.stderr, "push channel connected", time.Minute) {
		t.Fatalf("the managed agent did not connect its push channel\nstderr: %s", m.stderr)
	}
	squatter := startAgent(t, e, "auto", "shop", "T", squat.port)
	c := tunnelClient(t, e.addr)
	if resp, body, err := tryDo(c, "GET", e.publicURL("shop")+"/", nil, nil, 10*time.Second); err != nil || string(body) != "squatter" {
		t.Fatalf("the squatter does not serve: %v %q %v", resp, body, err)
	}

	start := time.Now()
	if r := run(t, 20*time.Second, append([]string{"tunnels", "create", "shop", "--upstream", "http://127.0.0.1:" + strconv.Itoa(owner.port),
		"--agent-token", secret}, admin...)...); r.code != 0 {
		t.Fatalf("tunnels create: exit %d, %q", r.code, r.stderr)
	}
	created := time.Since(start)
	for {
		// Each request begins after the create answered.
		resp, body, err := tryDo(c, "GET", e.publicURL("shop")+"/", nil, nil, 2*time.Second)
		if err == nil && resp.StatusCode == 200 {
			if string(body) == "owner" {
				break
			}
			if string(body) == "squatter" {
				// This request began after the create had answered.
				t.Fatalf("the squatter still serves after the create returned")
			}
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("the owner's agent did not serve shop within a minute: %v %q %v\nagent stderr: %s", resp, body, err, m.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("shop served by its owner %v after tunnels create started (%v after it returned)",
		time.Since(start).Round(time.Millisecond), (time.Since(start) - created).Round(time.Millisecond))
	select {
	case <-squatter.done:
	case <-time.After(time.Minute):
		t.Fatalf("the squatter kept running\nstderr: %s", squatter.stderr)
	}
	if out := squatter.stderr.String() + squatter.stdout.String(); !strings.Contains(out, "another agent token") {
		t.Errorf("the squatter did not say why it stopped: %q", out)
	}
}
