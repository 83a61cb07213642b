package sseload

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/sse"
)

// runUpstream serves event streams fed by one sse.Hub topic until standard
// input closes.
func runUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	interval := fs.Duration("interval", time.Second, "how often an event is published to every stream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// No history: a stream receives only events published after it
	// subscribed, which is what the clients measure.
	hub := sse.NewHub(sse.HubConfig{HistorySize: -1})
	var open atomic.Int64
	stream := hub.Handler(func(*http.Request) string { return "load" })
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		open.Add(1)
		defer open.Add(-1)
		stream.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int64{"streams": open.Load()})
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: mux}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "sseload upstream: serve:", err)
		}
		cancel()
	})
	// Not joined: a read of standard input cannot be interrupted, and it
	// ends with the process.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Printf("listening %s\n", ln.Addr())

	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			sent := strconv.FormatInt(time.Now().UnixNano(), 10)
			if _, err := hub.Publish("load", sse.Event{Data: sent}); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
		}
	}
	hub.Close()
	srv.Close()
	wg.Wait()
	return nil
}
