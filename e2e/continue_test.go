package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testtool"
)

// expectUpstream is a local server for Expect: 100-continue: /accept reads
// the body (net/http answers 100 on that first read) and says how much it
// got and whether it saw Expect; /reject answers 413 without reading;
// /hints sends 103 Early Hints before its answer. got counts the body
// bytes it read, all paths together.
type expectUpstream struct {
	*testUpstream
	got atomic.Int64
}

func newExpectUpstream(t *testing.T) *expectUpstream {
	u := &expectUpstream{testUpstream: newTestUpstream(t)}
	u.mux.HandleFunc("/accept", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		u.got.Add(n)
		w.Header().Set("X-Saw-Expect", r.Header.Get("Expect"))
		fmt.Fprintf(w, "got %d", n)
	})
	u.mux.HandleFunc("/reject", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Saw-Expect", r.Header.Get("Expect"))
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})
	// A server that ignores Expect: it reads the body without a 100.
	u.mux.HandleFunc("/silent", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		n, _ := io.Copy(io.Discard, io.LimitReader(brw, r.ContentLength))
		u.got.Add(n)
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\ngot %d", len(fmt.Sprintf("got %d", n)), n)
	})
	u.mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "hinted")
	})
	return u
}

// rawExpect sends an HTTP/1.1 POST of size bytes with Expect: 100-continue
// to addr for host and path, the body only after a 100, as a careful
// client does, and returns the statuses it received in order (every 1xx,
// then the final one), the final body and whether the body was sent.
func rawExpect(t *testing.T, addr, host, path string, size int) (statuses []int, body string, sent bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", path, host, size)
	br := bufio.NewReader(conn)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: reading a response after %v: %v", path, statuses, err)
		}
		statuses = append(statuses, resp.StatusCode)
		if resp.StatusCode == http.StatusContinue {
			if sent {
				continue // a second 100: recorded, the test fails on it
			}
			if _, err := conn.Write(bytes.Repeat([]byte("x"), size)); err != nil {
				t.Fatal(err)
			}
			sent = true
			continue
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s: body: %v", path, err)
		}
		return statuses, string(b), sent
	}
}

// TestExpectContinue: a client that expects 100-continue gets the local
// server's 100 once (then sends its body), or its early 413 without having
// sent anything; the local server sees Expect. Checked with a raw client
// that counts every status line, curl (bytes uploaded) and Node's http
// client (which fails on a second 100), and 103 Early Hints reach a Go
// client.
func TestExpectContinue(t *testing.T) { forProtocols(t, testExpectContinue) }

func testExpectContinue(t *testing.T, proto string) {
	up := newExpectUpstream(t)
	e := startEdge(t, "T")
	name := "expect-" + proto
	startAgent(t, e, proto, name, "T", up.port)
	host := fmt.Sprintf("%s.localhost:%d", name, e.port)

	t.Run("raw", func(t *testing.T) {
		statuses, body, sent := rawExpect(t, e.addr, host, "/accept", 1000)
		if fmt.Sprint(statuses) != "[100 200]" || body != "got 1000" || !sent {
			t.Errorf("accepting upstream: statuses %v, body %q, sent %v; want [100 200], \"got 1000\"", statuses, body, sent)
		}
		before := up.got.Load()
		statuses, body, sent = rawExpect(t, e.addr, host, "/reject", 1000)
		if fmt.Sprint(statuses) != "[413]" || sent || !strings.Contains(body, "too large") {
			t.Errorf("rejecting upstream: statuses %v, body %q, sent %v; want [413] without sending", statuses, body, sent)
		}
		if got := up.got.Load() - before; got != 0 {
			t.Errorf("the upstream read %d body bytes of a rejected request", got)
		}
		// An upstream that sends no 100: the agent's wait for it ends
		// (after a second, as a client's would) and the body goes.
		statuses, body, sent = rawExpect(t, e.addr, host, "/silent", 1000)
		if fmt.Sprint(statuses) != "[100 200]" || body != "got 1000" || !sent {
			t.Errorf("silent upstream: statuses %v, body %q, sent %v; want [100 200], \"got 1000\"", statuses, body, sent)
		}
	})

	t.Run("upstream sees Expect", func(t *testing.T) {
		c := tunnelClient(t, e.addr)
		resp, body := do(t, c, "POST", e.publicURL(name)+"/accept", []byte("hello"), http.Header{"Expect": {"100-continue"}})
		if resp.StatusCode != 200 || string(body) != "got 5" || resp.Header.Get("X-Saw-Expect") != "100-continue" {
			t.Errorf("got %d %q, upstream saw Expect %q", resp.StatusCode, body, resp.Header.Get("X-Saw-Expect"))
		}
	})

	t.Run("curl", func(t *testing.T) {
		curl := testtool.Need(t, "curl", "curl")
		const size = 64 << 20
		file := filepath.Join(t.TempDir(), "upload")
		if err := os.WriteFile(file, bytes.Repeat([]byte("u"), size), 0o600); err != nil {
			t.Fatal(err)
		}
		// --expect100-timeout: wait for the answer however busy the
		// machine is, rather than send after curl's default second.
		run := func(path string) (code, uploaded string, continues int) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, curl, "-sS", "-v", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
				"--resolve", fmt.Sprintf("%s.localhost:%d:127.0.0.1", name, e.port), "--expect100-timeout", "60",
				"-H", "Expect: 100-continue", "--data-binary", "@"+file, "http://"+host+path)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil && path == "/accept" {
				t.Fatalf("curl %s: %v\n%s", path, err, stderr.String())
			}
			code, uploaded, _ = strings.Cut(strings.TrimSpace(stdout.String()), " ")
			return code, uploaded, strings.Count(stderr.String(), "< HTTP/1.1 100")
		}
		before := up.got.Load()
		code, uploaded, continues := run("/reject")
		if code != "413" || uploaded != "0" || continues != 0 {
			t.Errorf("rejecting upstream: curl got %s after uploading %s bytes and %d 100s; want 413, 0 bytes, no 100", code, uploaded, continues)
		}
		if got := up.got.Load() - before; got != 0 {
			t.Errorf("the upstream read %d body bytes of a rejected request", got)
		}
		code, uploaded, continues = run("/accept")
		if code != "200" || uploaded != strconv.Itoa(size) || continues != 1 {
			t.Errorf("accepting upstream: curl got %s after uploading %s bytes and %d 100s; want 200, %d bytes, one 100", code, uploaded, continues, size)
		}
	})

	t.Run("node", func(t *testing.T) {
		node := testtool.Need(t, "node", "nodejs")
		// Node's client sends the body on 'continue'; a second 100 would
		// end the request twice (ERR_STREAM_WRITE_AFTER_END).
		script := `
const http = require('http');
const [port, host, path] = process.argv.slice(1);
const body = Buffer.alloc(100000, 'n');
const req = http.request({host: '127.0.0.1', port: +port, path, method: 'POST',
  headers: {Host: host, Expect: '100-continue', 'Content-Length': body.length}});
let continues = 0;
req.on('continue', () => { continues++; req.end(body); });
req.on('response', (res) => {
  let data = '';
  res.on('data', (c) => data += c);
  res.on('end', () => { console.log(JSON.stringify({status: res.statusCode, continues, data})); process.exit(0); });
});
req.on('error', (e) => { console.log(JSON.stringify({error: String(e), continues})); process.exit(0); });
setTimeout(() => { console.log(JSON.stringify({error: 'timeout', continues})); process.exit(0); }, 60000);
`
		run := func(path string) (out struct {
			Status    int
			Continues int
			Data      string
			Error     string
		}) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			b, err := exec.CommandContext(ctx, node, "-e", script, strconv.Itoa(e.port), host, path).CombinedOutput()
			if err != nil {
				t.Fatalf("node %s: %v\n%s", path, err, b)
			}
			if err := json.Unmarshal(bytes.TrimSpace(b), &out); err != nil {
				t.Fatalf("node %s printed %q: %v", path, b, err)
			}
			return out
		}
		if out := run("/accept"); out.Error != "" || out.Status != 200 || out.Continues != 1 || out.Data != "got 100000" {
			t.Errorf("accepting upstream: node got %+v; want 200, one continue, \"got 100000\"", out)
		}
		if out := run("/reject"); out.Error != "" || out.Status != 413 || out.Continues != 0 {
			t.Errorf("rejecting upstream: node got %+v; want 413 and no continue", out)
		}
	})

	t.Run("early hints", func(t *testing.T) {
		c := tunnelClient(t, e.addr)
		var hints []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
			return nil
		}}
		ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.publicURL(name)+"/hints", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "[103 </style.css>; rel=preload; as=style]"; fmt.Sprint(hints) != want || string(body) != "hinted" || resp.Header.Get("Link") != "" {
			t.Errorf("got 1xx %v, body %q, final Link %q; want %s then \"hinted\" without Link", hints, body, resp.Header.Get("Link"), want)
		}
	})
}
