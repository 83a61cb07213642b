//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
)

// pageStepTimeout bounds each wait on the page: generous, for a busy
// 2-core machine.
const pageStepTimeout = 60 * time.Second

// rowDelayCeiling is how late a request may show up in the list before the
// test fails. The goal is within a second; the delay is logged.
const rowDelayCeiling = 10 * time.Second

// seenRequest is what the local server saw of a request.
type seenRequest struct {
	method, uri string
	header      http.Header
	body        []byte
}

// TestInspectorPage drives the inspector's page in a real headless
// Chromium, with the agent's inspector on --inspect, through a real edge:
// a request shows up in the list without a reload, its view has headers
// (masked ones masked until revealed) and the JSON body, Replay and "Edit
// and replay" reach the local server, an SSE response's events and a
// WebSocket's messages appear one by one while the stream is open.
// Screenshots go to $SLUICE_SCREENSHOTS when it is set (to look at them),
// else to the test's temporary directory.
func TestInspectorPage(t *testing.T) {
	chromium := findChromium(t)

	up := newTestUpstream(t)
	seen := make(chan seenRequest, 16)
	up.mux.HandleFunc("/api/items", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- seenRequest{r.Method, r.URL.RequestURI(), r.Header.Clone(), body}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("Set-Cookie", "session=cookie-SECRET-456; HttpOnly")
		io.WriteString(w, `{"created":{"name":"sluice","tags":["tunnel","inspector"]},"count":2}`)
	})
	up.mux.HandleFunc("/form", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write([]byte{0x89, 'S', 'L', 'U', 0, 1, 2, 3, 0xfe, 0xff, '\n', 'x'})
	})
	up.mux.HandleFunc("/logo.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(testPNG(t))
	})
	sseNext := make(chan string) // each value is sent as an event; closed: the stream ends
	up.mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		w.WriteHeader(http.StatusOK)
		rc.Flush()
		for n := 1; ; n++ {
			select {
			case data, ok := <-sseNext:
				if !ok {
					return
				}
				fmt.Fprintf(w, "event: tick\nid: %d\ndata: %s\n\n", n, data)
				rc.Flush()
			case <-r.Context().Done():
				return
			case <-up.stop:
				return
			}
		}
	})
	up.mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(websocket.TextMessage, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	})

	e := startEdge(t, "T")
	_, inspector := startInspected(t, e, "insp", up.port)
	// The agent pipes with its inspector on: the GETs below (the image,
	// the SSE stream) are recorded from the pipe's bytes, the POSTs and the
	// WebSocket from streams of their own.
	if !e.waitOutput(e.stderr, " pipe]", 15*time.Second) {
		t.Fatalf("the edge did not confirm pipes:\n%s", e.stderr)
	}
	client := tunnelClient(t, e.addr)
	public := e.publicURL("insp")

	p := openPage(t, chromium, inspector+"/")
	p.waitFor("the event stream is live", `document.querySelector('#live.on') !== null`)
	p.shot("empty")

	// A request through the tunnel shows up in the list by itself.
	p.eval(`(() => {
		window.__noReload = true;
		window.__seen = {};
		const note = () => {
			for (const a of document.querySelectorAll('#rows tr td.path a')) {
				if (!(a.title in window.__seen)) window.__seen[a.title] = Date.now();
			}
		};
		new MutationObserver(note).observe(document.getElementById('rows'), {childList: true, subtree: true});
		return true;
	})()`)
	reqHeader := http.Header{
		"Content-Type":  {"application/json"},
		"Authorization": {"Bearer tok-SECRET-123"},
		"Cookie":        {"pref=dark"},
		"X-Request-Tag": {"browser-test"},
	}
	reqBody := []byte(`{"name":"sluice","tags":["tunnel","inspector"]}`)
	sent := time.Now()
	resp, _ := do(t, client, "POST", public+"/api/items?via=test", reqBody, reqHeader)
	if resp.StatusCode != 200 {
		t.Fatalf("POST through the tunnel: %s", resp.Status)
	}
	original := <-seen
	p.waitFor("the request's row", `'/api/items?via=test' in window.__seen`)
	seenAt := p.evalInt(`window.__seen['/api/items?via=test']`)
	delay := time.UnixMilli(seenAt).Sub(sent)
	t.Logf("the request's row appeared %v after the request was sent (without a reload)", delay.Round(time.Millisecond))
	if delay > rowDelayCeiling {
		t.Errorf("the row appeared after %v, beyond %v", delay, rowDelayCeiling)
	}
	p.shot("list")

	// Its view: headers, masked ones masked, and the JSON bodies.
	id := p.rowID("/api/items?via=test")
	p.click(fmt.Sprintf(`#rows tr[data-id="%s"] td.time`, id))
	p.waitFor("the request's headers", `viewText().includes('X-Request-Tag') && viewText().includes('browser-test')`)
	p.waitFor("the request's JSON body, pretty", `[...document.querySelectorAll('#view pre.json')].some((e) => e.textContent.includes('"name": "sluice"'))`)
	p.waitFor("the response's JSON body, pretty", `[...document.querySelectorAll('#view pre.json')].some((e) => e.textContent.includes('"count": 2'))`)
	for _, secret := range []string{"tok-SECRET-123", "pref=dark", "cookie-SECRET-456"} {
		if p.evalBool(fmt.Sprintf(`viewText().includes(%q)`, secret)) {
			t.Errorf("the view shows %q before it is revealed", secret)
		}
	}
	if n := p.evalInt(`[...document.querySelectorAll('#view .masked')].filter((e) => e.textContent === '••••••').length`); n != 3 {
		t.Errorf("%d masked values shown, want 3 (Authorization, Cookie, Set-Cookie)", n)
	}
	if loc := p.evalString(`location.hash`); loc != "#"+id {
		t.Errorf("location.hash %q, want #%s", loc, id)
	}
	p.shot("request")
	p.clickXPath(`//tr[th="Authorization"]//button[contains(@class,"reveal")]`)
	p.waitFor("the revealed Authorization", `viewText().includes('Bearer tok-SECRET-123')`)
	if p.evalBool(`viewText().includes('pref=dark')`) {
		t.Error("revealing Authorization revealed Cookie too")
	}
	p.shot("revealed")

	// Replay: the local server gets the same request again.
	p.click(`#replay`)
	replayed := waitSeen(t, seen)
	if replayed.method != original.method || replayed.uri != original.uri || !bytes.Equal(replayed.body, original.body) {
		t.Errorf("replay: %s %s %q; want %s %s %q", replayed.method, replayed.uri, replayed.body, original.method, original.uri, original.body)
	}
	if !reflect.DeepEqual(replayed.header, original.header) {
		t.Errorf("replay's headers differ:\n got %v\nwant %v", replayed.header, original.header)
	}
	p.waitFor("the replay in the list", `[...document.querySelectorAll('#rows tr')].some((tr) => tr.querySelector('.badge.replay') && tr.textContent.includes('/api/items?via=test'))`)
	p.waitFor("the replay's view", fmt.Sprintf(`location.hash !== '#%s' && viewText().includes('Replay of') && viewText().includes('#%s')`, id, id))
	p.shot("replay")

	// Edit and replay: a changed header and body; a masked header goes as
	// recorded.
	p.eval(fmt.Sprintf(`location.hash = '#%s'`, id))
	p.waitFor("the original's view", fmt.Sprintf(`location.hash === '#%s' && !!document.querySelector('#view #edit') && !viewText().includes('Replay of')`, id))
	p.click(`#edit`)
	p.waitFor("the editor", `!!document.querySelector('#view .editor:not([hidden]) textarea.e-body') && document.querySelector('#view textarea.e-body').value.includes('sluice')`)
	if h := p.evalString(`document.querySelector('#view textarea.e-headers').value`); strings.Contains(h, "tok-SECRET-123") || !strings.Contains(h, "Authorization: ••••••") {
		t.Errorf("the editor's headers show a masked value, or lack its mask:\n%s", h)
	}
	p.do("edit the request",
		chromedp.SetValue(chromedp.CSS(`#view textarea.e-headers`), "Content-Type: application/json\nAuthorization: ••••••\nX-Request-Tag: edited\n"),
		chromedp.SetValue(chromedp.CSS(`#view textarea.e-body`), `{"name":"edited"}`),
		chromedp.SetValue(chromedp.CSS(`#view input.e-path`), "/api/items?via=edit"))
	p.shot("editor")
	p.click(`#view .editor button.primary`)
	edited := waitSeen(t, seen)
	if edited.uri != "/api/items?via=edit" || string(edited.body) != `{"name":"edited"}` ||
		edited.header.Get("X-Request-Tag") != "edited" || edited.header.Get("Authorization") != "Bearer tok-SECRET-123" ||
		edited.header.Get("Cookie") != "" {
		t.Errorf("edited replay: %s %q, headers %v", edited.uri, edited.body, edited.header)
	}
	p.waitFor("the edited replay's view", `viewText().includes('/api/items?via=edit') && viewText().includes('Replay of')`)

	// Bodies by type: form fields, an image, binary as hex.
	do(t, client, "POST", public+"/form", []byte("name=sluice&kind=tunnel+%26+more"), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
	p.open(p.waitRowID("/form"))
	p.waitFor("the form fields", `[...document.querySelectorAll('#view table.form td')].some((td) => td.textContent === 'tunnel & more')`)
	p.waitFor("the binary body as hex", `[...document.querySelectorAll('#view pre.hex')].some((e) => e.textContent.includes('89 53 4c 55 00 01 02 03'))`)
	p.shot("form-and-hex")
	do(t, client, "GET", public+"/logo.png", nil, nil)
	p.open(p.waitRowID("/logo.png"))
	p.waitFor("the image", `(() => { const img = document.querySelector('#view img.body-image'); return !!img && img.complete && img.naturalWidth === 64; })()`)
	p.shot("image")

	// An SSE response: each event shows up while the stream is open.
	events := make(chan string, 8)
	sseDone := make(chan struct{})
	go func() {
		defer close(sseDone)
		defer close(events)
		resp, err := client.Get(public + "/events")
		if err != nil {
			t.Errorf("GET /events: %v", err)
			return
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		for {
			ev, err := readEvent(br)
			if err != nil {
				return
			}
			events <- ev
		}
	}()
	sseID := p.waitRowID("/events")
	// The row's cells that do not change stay the same nodes while the
	// request goes on (checked at its end): a click on a row that changes
	// under the pointer would otherwise be lost.
	p.eval(fmt.Sprintf(`window.__sseTime = document.querySelector('#rows tr[data-id="%s"] td.time'), true`, sseID))
	p.open(sseID)
	for i, data := range []string{"first event", "second event", `{"third":3}`} {
		n := i + 1
		select {
		case sseNext <- data:
		case <-time.After(pageStepTimeout):
			t.Fatalf("the local server's /events handler is not there to send event %d", n)
		}
		select {
		case ev := <-events:
			if !strings.Contains(ev, data) {
				t.Fatalf("the client got %q, want data %q", ev, data)
			}
		case <-time.After(pageStepTimeout):
			t.Fatalf("the client never got event %d", n)
		}
		p.waitFor(fmt.Sprintf("SSE event %d in the view", n), fmt.Sprintf(
			`(() => { const tr = document.querySelector('#view table.items.sse tr[data-n="%d"]'); return !!tr && tr.textContent.includes(%q) && tr.textContent.includes('tick'); })()`, n, data))
		if rows := p.evalInt(`document.querySelectorAll('#view table.items tbody tr').length`); rows != int64(n) {
			t.Errorf("after event %d the view has %d events", n, rows)
		}
		if !p.evalBool(`viewText().includes('streaming')`) {
			t.Errorf("event %d: the view does not say the stream is open", n)
		}
	}
	p.waitFor("the SSE row marked as a stream while it is open", fmt.Sprintf(`document.querySelector('#rows tr[data-id="%s"] .badge.stream')?.textContent === 'sse'`, sseID))
	p.shot("sse")
	close(sseNext)
	<-sseDone
	p.waitFor("the SSE stream's end", `document.querySelector('#view .summary').textContent.includes('done')`)
	if !p.evalBool(fmt.Sprintf(`window.__sseTime.isConnected && document.querySelector('#rows tr[data-id="%s"] td.time') === window.__sseTime`, sseID)) {
		t.Error("the SSE row's time cell was replaced while the request went on (a click on it could be lost)")
	}

	// A WebSocket: messages both ways.
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, e.addr)
		},
		HandshakeTimeout: pageStepTimeout,
	}
	ws, _, err := d.Dial(strings.Replace(public, "http://", "ws://", 1)+"/ws", nil)
	if err != nil {
		t.Fatalf("WebSocket through the tunnel: %v", err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(pageStepTimeout))
	wsID := p.waitRowID("/ws")
	p.open(wsID)
	for _, msg := range []string{"hello from the client", "second message ✓"} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := ws.ReadMessage(); err != nil || string(got) != "echo: "+msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
		p.waitFor("the message in", fmt.Sprintf(`[...document.querySelectorAll('#view table.items.websocket tr.in')].some((tr) => tr.textContent.includes(%q) && tr.textContent.includes('↑') && tr.textContent.includes('text'))`, msg))
		p.waitFor("the message out", fmt.Sprintf(`[...document.querySelectorAll('#view table.items.websocket tr.out')].some((tr) => tr.textContent.includes(%q) && tr.textContent.includes('↓'))`, "echo: "+msg))
	}
	p.waitFor("the WebSocket row marked as a stream while it is open", fmt.Sprintf(`document.querySelector('#rows tr[data-id="%s"] .badge.stream')?.textContent === 'websocket'`, wsID))
	p.shot("websocket")
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))

	// The filters: typed in, and set.
	p.do("filter by path", chromedp.SendKeys(chromedp.CSS(`#f-path`), "api/items"))
	p.waitFor("only the /api/items rows", `(() => {
		const shown = [...document.querySelectorAll('#rows tr')].filter((tr) => !tr.hidden);
		return shown.length === 3 && shown.every((tr) => tr.textContent.includes('/api/items'));
	})()`)
	p.shot("filter-path")
	setFilter := func(id, value string) {
		p.t.Helper()
		p.eval(fmt.Sprintf(`(() => { const f = document.getElementById(%q); f.value = %q; f.dispatchEvent(new Event('input')); return true; })()`, id, value))
	}
	setFilter("f-path", "")
	setFilter("f-status", "1xx")
	p.waitFor("only the WebSocket row", `(() => {
		const shown = [...document.querySelectorAll('#rows tr')].filter((tr) => !tr.hidden);
		return shown.length === 1 && shown[0].textContent.includes('/ws') && shown[0].textContent.includes('101');
	})()`)
	setFilter("f-status", "")
	setFilter("f-method", "POST")
	p.waitFor("only the POST rows", `(() => {
		const shown = [...document.querySelectorAll('#rows tr')].filter((tr) => !tr.hidden);
		return shown.length === 4 && shown.every((tr) => tr.querySelector('.method').textContent === 'POST');
	})()`)
	setFilter("f-method", "")
	setFilter("f-status", "404")
	p.waitFor("no row, and a message saying so", `[...document.querySelectorAll('#rows tr')].every((tr) => tr.hidden) && !document.getElementById('empty').hidden`)
	setFilter("f-status", "")

	if !p.evalBool(`window.__noReload === true`) {
		t.Error("the page was reloaded")
	}
	p.checkConsole()
}

// waitSeen waits for the local server's next request.
func waitSeen(t *testing.T, seen <-chan seenRequest) seenRequest {
	t.Helper()
	select {
	case r := <-seen:
		return r
	case <-time.After(pageStepTimeout):
		t.Fatal("the local server never got the replay")
		return seenRequest{}
	}
}

// testPNG is a 64x64 PNG.
func testPNG(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 4), 200, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// page is a Chromium tab driven over the DevTools protocol (chromedp).
type page struct {
	t     *testing.T
	ctx   context.Context
	shots string // where screenshots go
	nShot int

	mu      sync.Mutex
	console []string // errors and exceptions the page logged
}

// openPage starts a headless Chromium (in its own process group, with a
// fresh profile and home, like startChromium) on url. A cleanup stops it
// and checks that none of its processes is left.
func openPage(t *testing.T, chromium, url string) *page {
	t.Helper()
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	profile := filepath.Join(dir, "profile")
	for _, d := range []string{home, profile} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	marker := "SLUICE_E2E_CHROMIUM=" + dir
	var cmd *exec.Cmd
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("mute-audio", true),
		chromedp.WindowSize(1400, 900),
		chromedp.Env(marker, "HOME="+home,
			"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
			"XDG_CACHE_HOME="+filepath.Join(home, ".cache")),
		chromedp.ModifyCmdFunc(func(c *exec.Cmd) {
			c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			cmd = c
		}),
	)
	// The whole exchange has a ceiling; each step has its own below.
	root, rootCancel := context.WithTimeout(context.Background(), 10*time.Minute)
	allocCtx, allocCancel := chromedp.NewExecAllocator(root, opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	p := &page{t: t, ctx: ctx, shots: os.Getenv("SLUICE_SCREENSHOTS")}
	if p.shots == "" {
		p.shots = filepath.Join(dir, "screenshots")
	}
	if err := os.MkdirAll(p.shots, 0o755); err != nil {
		t.Fatal(err)
	}

	consoleDone := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		allocCancel()
		rootCancel()
		<-consoleDone
		if cmd != nil && cmd.Process != nil {
			if err := waitBrowserGone(cmd.Process.Pid, marker, 10*time.Second); err != nil {
				t.Error(err)
			}
		}
		if os.Getenv("SLUICE_SCREENSHOTS") != "" {
			t.Logf("screenshots in %s", p.shots)
		}
	})
	// The first Run starts the browser; it has no timeout of its own (one
	// would stop the browser), only root's.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		close(consoleDone)
		t.Fatalf("starting %s: %v", chromium, err)
	}
	go func() {
		defer close(consoleDone)
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				p.mu.Lock()
				p.console = append(p.console, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line))
				p.mu.Unlock()
			}
		}
	}()
	p.do("load the page", chromedp.Navigate(url))
	p.eval(`window.viewText = () => document.getElementById('view').textContent, true`)
	return p
}

// do runs actions within pageStepTimeout; on failure it takes a screenshot
// and ends the test.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, pageStepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.shot("failed")
		p.t.Fatalf("%s: %v", what, err)
	}
}

// waitFor waits until the JavaScript expression is true.
func (p *page) waitFor(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, pageStepTimeout+5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(pageStepTimeout)))
	if err != nil {
		p.shot("failed")
		p.t.Fatalf("waiting for %s (%v): %v\nexpression: %s\nthe view says: %s", what, time.Since(start).Round(time.Millisecond), err, expr, p.viewText())
	}
}

func (p *page) viewText() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('view').innerText`))
	return s
}

func evalIn[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, pageStepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

func (p *page) eval(expr string)              { p.t.Helper(); evalIn[any](p, expr) }
func (p *page) evalBool(expr string) bool     { p.t.Helper(); return evalIn[bool](p, expr) }
func (p *page) evalInt(expr string) int64     { p.t.Helper(); return evalIn[int64](p, expr) }
func (p *page) evalString(expr string) string { p.t.Helper(); return evalIn[string](p, expr) }
func (p *page) click(sel string) {
	p.t.Helper()
	p.do("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// clickXPath clicks the first element of an XPath query.
func (p *page) clickXPath(path string) {
	p.t.Helper()
	p.do("click "+path, chromedp.Click(chromedp.Search(path), chromedp.NodeVisible))
}
func (p *page) rowID(path string) string { p.t.Helper(); return p.evalString(rowIDExpr(path)) }
func (p *page) open(id string) {
	p.t.Helper()
	p.click(fmt.Sprintf(`#rows tr[data-id="%s"] td.time`, id))
}
func rowIDExpr(path string) string {
	return fmt.Sprintf(`(() => { const a = [...document.querySelectorAll('#rows tr td.path a')].find((a) => a.title === %q); return a ? a.closest('tr').dataset.id : ''; })()`, path)
}

// waitRowID waits for the list's row of path and returns its ID.
func (p *page) waitRowID(path string) string {
	p.t.Helper()
	p.waitFor("the row of "+path, rowIDExpr(path)+` !== ''`)
	id := p.rowID(path)
	return id
}

// shot saves a screenshot of the viewport as NN-name.png.
func (p *page) shot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, pageStepTimeout)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p.nShot++
	file := filepath.Join(p.shots, fmt.Sprintf("%02d-%s.png", p.nShot, name))
	if err := os.WriteFile(file, b, 0o644); err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
	}
}

// checkConsole fails the test if the page logged an error or threw.
func (p *page) checkConsole() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.console {
		p.t.Errorf("the page logged %s", m)
	}
}
