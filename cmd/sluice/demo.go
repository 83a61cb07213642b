package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/sse"
)

const demoHelp = `Usage: sluice demo [flags]

Runs all of sluice in one process, with nothing to install: an edge on
127.0.0.1, an agent, and a small demo app behind the tunnel — a page, an SSE
clock, a large download and an upload digest. It prints the public URL and
commands to try, then one line per request through the tunnel. Stop it with
Ctrl-C.

With --max-events N it instead reads its own clock feed through the tunnel,
prints N events as "sluice events" would, and exits: a self-test.

` + inspectHelp

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("demo", demoHelp, stderr)
	listen := fs.String("listen", "127.0.0.1:0", "the edge's address (port 0: any free port)")
	interval := fs.Duration("interval", time.Second, "time between two events of the clock feed")
	count := fs.Int("max-events", 0, "read `N` events of the feed through the tunnel, print them and exit (0: serve until interrupted)")
	inspectOpts := inspectFlags(fs)
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("demo: unexpected argument %q", pos[0])
	}
	if *interval <= 0 {
		return cli.Usagef("demo: --interval must be positive")
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	// The demo app, on a loopback port of its own.
	hub := sse.NewHub(sse.HubConfig{HistorySize: 100})
	defer hub.Close()
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	app := &http.Server{Handler: demoApp(hub), ReadHeaderTimeout: 10 * time.Second}
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := app.Serve(appLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "sluice: demo app: %v\n", err)
		}
	}()
	go func() {
		defer wg.Done()
		publishClock(ctx, hub, *interval)
	}()
	defer app.Close()

	// The edge, with a one-off token.
	edgeLn, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("demo: listen: %w", err)
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	cfg := edge.DefaultConfig()
	cfg.Tokens = []string{hex.EncodeToString(tok)}
	cfg.PublicPort = edgeLn.Addr().(*net.TCPAddr).Port
	srv, err := edge.New(cfg)
	if err != nil {
		edgeLn.Close()
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(ctx, edgeLn, time.Second)
	}()

	// The agent.
	connected := make(chan string, 1)
	acfg := agent.Config{
		UserAgent: userAgent(),
		Edge:      "http://" + edgeLn.Addr().String(),
		Token:     cfg.Tokens[0],
		Name:      "demo",
		Upstream:  &url.URL{Scheme: "http", Host: appLn.Addr().String()},
		OnConnect: func(public, _ string) {
			select {
			case connected <- public:
			default:
			}
		},
	}
	if *count == 0 {
		acfg.Console = stdout
	}
	insp, err := inspectOpts.open("demo", io.Discard, stderr) // its line is in the text below
	if err != nil {
		return err
	}
	acfg.Inspector = insp.inspector()
	a, err := agent.New(acfg)
	if err != nil {
		insp.close()
		return err
	}
	insp.serve(ctx, &wg, a.Handler())
	agentErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		agentErr <- a.Run(ctx)
	}()
	var public string
	select {
	case public = <-connected:
	case err := <-agentErr:
		return fmt.Errorf("demo: agent: %v", err)
	case <-ctx.Done():
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("demo: the agent did not register with the embedded edge")
	}

	fmt.Fprintf(stderr, `sluice demo: an edge, an agent and a demo app in this process.

  Public URL:   %[1]s/   (open it in a browser: a live SSE clock)
  Try:          curl %[1]s/
                sluice events %[1]s/events --json
                curl -o /dev/null %[1]s/download?size=1073741824
                head -c 100000000 /dev/zero | curl -T - %[1]s/upload
                a WebSocket echo at %[2]s/ws
%[3]s
Requests through the tunnel:
`, public, "ws"+strings.TrimPrefix(public, "http"), insp.line())
	if *count > 0 {
		return streamEvents(ctx, public+"/events", eventsOptions{maxEvents: *count, quiet: true}, stdout, stderr)
	}
	<-ctx.Done()
	return nil
}

// demoApp is the app behind the demo tunnel.
func demoApp(hub *sse.Hub) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /events", hub.Handler(func(*http.Request) string { return "clock" }))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, demoPage)
	})
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		size := int64(100 << 20)
		if s := r.URL.Query().Get("size"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				http.Error(w, "size must be a number of bytes", http.StatusBadRequest)
				return
			}
			size = n
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Content-Disposition", `attachment; filename="sluice-demo.bin"`)
		buf := make([]byte, 64<<10)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		for size > 0 {
			n := min(size, int64(len(buf)))
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			size -= n
		}
	})
	mux.HandleFunc("POST /upload", uploadDigest)
	mux.HandleFunc("PUT /upload", uploadDigest)
	mux.HandleFunc("GET /ws", wsEcho)
	return mux
}

// wsEcho is a WebSocket that answers each message with "echo: " and the
// message, through the tunnel like the rest.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{} // same origin only, the default
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered already
	}
	defer ws.Close()
	for {
		typ, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if err := ws.WriteMessage(typ, append([]byte("echo: "), msg...)); err != nil {
			return
		}
	}
}

// uploadDigest reads the whole body as it streams in and answers its size
// and SHA-256.
func uploadDigest(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	start := time.Now()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "upload broken: "+err.Error(), http.StatusBadRequest)
		return
	}
	secs := max(time.Since(start).Seconds(), 1e-9)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"bytes":%d,"sha256":"%s","mb_per_s":%.1f}`+"\n", n, hex.EncodeToString(h.Sum(nil)), float64(n)/secs/1e6)
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
<style>body{font:16px system-ui,sans-serif;margin:2rem;max-width:44rem}#t{font-size:2rem}li{font-family:monospace}</style>
<h1>sluice demo</h1>
<p>This page came through a sluice tunnel. The time below is a Server-Sent
Events feed, streamed through the same tunnel: <span id="t">waiting…</span></p>
<p><a href="/download?size=104857600">Download 100 MiB</a> ·
<label>Upload a file: <input type="file" id="f"></label> <span id="u"></span></p>
<p><label>WebSocket, through the tunnel too: <input id="m" placeholder="type and press Enter"></label>
<span id="w"></span></p>
<ol id="log" reversed></ol>
<script>
const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws');
ws.onmessage = (e) => { document.getElementById('w').textContent = e.data; };
ws.onclose = () => { document.getElementById('w').textContent = '(WebSocket closed)'; };
document.getElementById('m').onkeydown = (e) => {
  if (e.key === 'Enter' && ws.readyState === WebSocket.OPEN) { ws.send(e.target.value); e.target.value = ''; }
};
const es = new EventSource('/events');
es.addEventListener('tick', (e) => {
  document.getElementById('t').textContent = e.data;
  const li = document.createElement('li');
  li.textContent = 'id ' + e.lastEventId + ': ' + e.data;
  const log = document.getElementById('log');
  log.prepend(li);
  while (log.children.length > 10) log.lastChild.remove();
});
es.onerror = () => { document.getElementById('t').textContent = 'reconnecting…'; };
document.getElementById('f').onchange = async (e) => {
  const file = e.target.files[0];
  document.getElementById('u').textContent = 'uploading…';
  const r = await fetch('/upload', {method: 'POST', body: file});
  document.getElementById('u').textContent = await r.text();
};
</script>
`) + "\n"
