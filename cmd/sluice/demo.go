package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/sse"
)

const demoHelp = `Usage: sluice demo [flags]

Runs a small demo on 127.0.0.1: an event feed that publishes the time every
second (an SSE hub with replay history), a page that shows it with the
browser's EventSource, and prints the feed's events here as "sluice events"
would. Stop it with Ctrl-C.
`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", demoHelp, stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	interval := fs.Duration("interval", time.Second, "time between two events of the feed")
	count := fs.Int("max-events", 0, "exit after printing `N` events (0: run until interrupted)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("demo: unexpected argument %q", pos[0])
	}
	if *interval <= 0 {
		return usagef("demo: --interval must be positive")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("demo: listen: %w", err)
	}
	hub := sse.NewHub(sse.HubConfig{HistorySize: 100})
	mux := http.NewServeMux()
	mux.Handle("GET /events", hub.Handler(func(*http.Request) string { return "clock" }))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, demoPage)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "sluice: demo server: %v\n", err)
		}
	}()
	go func() {
		defer wg.Done()
		publishClock(ctx, hub, *interval)
	}()
	defer func() {
		cancel()
		hub.Close() // ends the open streams, so Shutdown does not wait on them
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		wg.Wait()
	}()

	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stderr, "Demo feed:  %s/events\nDemo page:  %s/\nTry:        sluice events %s/events --json\n\n", base, base, base)
	return streamEvents(ctx, base+"/events", eventsOptions{maxEvents: *count, quiet: true}, stdout, stderr)
}

func publishClock(ctx context.Context, hub *sse.Hub, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if _, err := hub.Publish("clock", sse.Event{Type: "tick", Data: now.Format(time.RFC3339)}); err != nil {
				return
			}
		}
	}
}

var demoPage = strings.TrimSpace(`
<!doctype html>
<meta charset="utf-8">
<title>sluice demo</title>
<style>body{font:16px system-ui,sans-serif;margin:2rem}#t{font-size:2rem}li{font-family:monospace}</style>
<h1>sluice demo feed</h1>
<p>Time from the server, through an EventSource: <span id="t">waiting…</span></p>
<ol id="log" reversed></ol>
<script>
const es = new EventSource('/events');
es.addEventListener('tick', (e) => {
  document.getElementById('t').textContent = e.data;
  const li = document.createElement('li');
  li.textContent = 'id ' + e.lastEventId + ': ' + e.data;
  const log = document.getElementById('log');
  log.prepend(li);
  while (log.children.length > 20) log.lastChild.remove();
});
es.onerror = () => { document.getElementById('t').textContent = 'reconnecting…'; };
</script>
`) + "\n"
