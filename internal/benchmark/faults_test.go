package benchmark

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestFaults is the lean form of "bench faults": every fault (latency
// with jitter, bandwidth, slicer, blackhole, reset_peer) between the
// agent and the edge and between the client and the edge, for both
// protocols, with a few requests each, through toxiproxy's server; the edge,
// the agents and toxiproxy are child processes. Every response is complete and byte-exact or visibly aborted,
// the agent comes back after each fault, the processes return to their
// goroutine and descriptor counts, and a second tunnel on the same edge
// keeps serving. No timing is asserted: every wait has a ceiling of
// minutes, reached only by a stuck run.
func TestFaults(t *testing.T) {
	var progress bytes.Buffer
	cfg := FaultsConfig{
		SluiceBin:    buildCmd(t, "sluice", "../../cmd/sluice"),
		ToxiproxyBin: buildCmd(t, "toxiproxy-server", "github.com/Shopify/toxiproxy/v2/cmd/server"),
		Requests:     4,
		MaxSize:      128 << 10,
		Rate:         1024,
		Seed:         uint64(time.Now().UnixNano()),
		Progress:     &progress,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rep, err := Faults(ctx, cfg)
	if testing.Verbose() || err != nil {
		t.Logf("seed %d\n%s", cfg.Seed, progress.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(rep.Results), len(FaultNames)*len(LinkNames)*2; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	for _, r := range rep.Results {
		name := r.Protocol + " " + r.Link + " " + r.Fault
		if r.Requests != cfg.Requests || r.Complete+r.Aborted+r.Refused != r.Requests {
			t.Errorf("%s: %d requests: %d complete, %d aborted, %d refused", name, r.Requests, r.Complete, r.Aborted, r.Refused)
		}
		if r.BytesChecked <= 0 || r.SteadyRequests <= 0 {
			t.Errorf("%s: %d bytes checked, %d steady requests", name, r.BytesChecked, r.SteadyRequests)
		}
		// Faults that only slow a link neither fail a request nor drop
		// the agent; a blackhole or a reset of the agent's link does.
		switch {
		case !disrupts(r.Fault) && (r.Complete != r.Requests || r.Reconnects != 0):
			t.Errorf("%s: %d of %d complete, %d reconnects; want all, none", name, r.Complete, r.Requests, r.Reconnects)
		case disrupts(r.Fault) && r.Link == "agent" && r.Reconnects < 1:
			t.Errorf("%s: the agent did not reconnect", name)
		case disrupts(r.Fault) && r.Complete == r.Requests:
			t.Errorf("%s: every request completed: the fault was not felt", name)
		}
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
}

// The checks of the fault run tell a complete body from a cut one: a
// chunked body that ends cleanly but short is a violation, a connection
// closed in the middle an abort, an error status a refusal; an upload
// whose body ends cleanly but short is counted by the upstream.
func TestFaultOutcomes(t *testing.T) {
	up, err := startFaultUpstream()
	if err != nil {
		t.Fatal(err)
	}
	defer up.close()
	const size = 100_000
	mux := http.NewServeMux()
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, size/2)
		newPattern(7).Read(b)
		w.Write(b) // and the handler returns: a clean end of the chunked body
	})
	mux.HandleFunc("/cut", func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, size/2)
		newPattern(7).Read(b)
		w.Write(b)
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/wrong", func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, size)
		newPattern(8).Read(b)
		w.Write(b)
	})
	mux.HandleFunc("/refused", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "agent offline", http.StatusBadGateway)
	})
	mux.Handle("/data", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			up.download(w, r)
		} else {
			up.upload(w, r)
		}
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	hc := srv.Client()
	ctx := context.Background()
	for _, c := range []struct {
		path string
		want outcomeKind
	}{{"/data", outcomeComplete}, {"/short", outcomeViolation}, {"/cut", outcomeAborted}, {"/wrong", outcomeViolation}, {"/refused", outcomeRefused}} {
		base := srv.URL
		if c.path != "/data" {
			base = srv.URL + c.path + "?"
		}
		o := download(ctx, hc, base, "", size, 7, nil)
		if o.kind != c.want {
			t.Errorf("download %s: outcome %d (%v), want %d", c.path, o.kind, o.err, c.want)
		}
	}
	if o := upload(ctx, hc, srv.URL, "", size, 9, nil); o.kind != outcomeComplete || o.checked != size {
		t.Errorf("upload: %+v", o)
	}
	// A body that ends cleanly, short of what the query says.
	resp, err := hc.Post(srv.URL+"/data?n=100&seed=9", "application/octet-stream", io.NopCloser(strings.NewReader("")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity || up.shortUploads.Load() != 1 {
		t.Errorf("short upload: %s, %d counted", resp.Status, up.shortUploads.Load())
	}
}
