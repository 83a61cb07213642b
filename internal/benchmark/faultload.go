package benchmark

// The load of the fault run: downloads and uploads whose every byte is
// checked, and the upstream that serves and checks them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// outcomeKind is how a request of the fault run ended.
type outcomeKind int

const (
	outcomeComplete  outcomeKind = iota // 200, every byte right
	outcomeAborted                      // the client saw an error
	outcomeRefused                      // an error status
	outcomeViolation                    // a cut or wrong body presented as complete
)

type outcome struct {
	kind    outcomeKind
	err     error
	checked int64
}

// download GETs /data?n=SIZE&seed=SEED (a chunked body, so that only the
// end of the chunked encoding says it is complete) and compares every
// byte with the pattern.
func download(ctx context.Context, hc *http.Client, base, host string, size int64, seed uint64, gate *faultGate) outcome {
	url := fmt.Sprintf("%s/data?n=%d&seed=%d", base, size, seed)
	if gate != nil {
		url += "&gate=" + strconv.FormatUint(gate.id, 10)
		defer gate.arrived(seed)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return outcome{kind: outcomeAborted, err: err}
	}
	req.Host = host
	resp, err := hc.Do(req)
	if err != nil {
		return outcome{kind: outcomeAborted, err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return outcome{kind: outcomeRefused, err: fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))}
	}
	want := newPattern(seed)
	got := make([]byte, 32<<10)
	exp := make([]byte, 32<<10)
	var n int64
	for {
		m, err := resp.Body.Read(got)
		if m > 0 {
			want.Read(exp[:m])
			if !bytes.Equal(got[:m], exp[:m]) {
				return outcome{kind: outcomeViolation, checked: n + int64(m), err: fmt.Errorf("wrong bytes at offset %d", n+int64(firstDiff(got[:m], exp[:m])))}
			}
			n += int64(m)
			if gate != nil && n >= size/2 {
				gate.arrived(seed)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return outcome{kind: outcomeAborted, checked: n, err: fmt.Errorf("reading the body after %d of %d bytes: %w", n, size, err)}
		}
	}
	if n != size {
		return outcome{kind: outcomeViolation, checked: n, err: fmt.Errorf("the body ended cleanly after %d of %d bytes", n, size)}
	}
	return outcome{kind: outcomeComplete, checked: n}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// upload POSTs SIZE bytes of the pattern to /data (chunked, so that only
// the end of the chunked encoding says the body is complete); the
// upstream compares them and answers 200 "ok" or 422 with what was wrong.
func upload(ctx context.Context, hc *http.Client, base, host string, size int64, seed uint64, gate *faultGate) outcome {
	url := fmt.Sprintf("%s/data?n=%d&seed=%d", base, size, seed)
	body := &patternBody{p: newPattern(seed), left: size}
	if gate != nil {
		body.half, body.gate = size/2, gate
		url += "&gate=" + strconv.FormatUint(gate.id, 10)
		// The upstream says when it has read half; this is for an
		// upload that ends before.
		defer gate.arrived(seed)
	}
	// No Content-Length: the body is chunked.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, io.NopCloser(body))
	if err != nil {
		return outcome{kind: outcomeAborted, err: err}
	}
	req.Host = host
	resp, err := hc.Do(req)
	if err != nil {
		return outcome{kind: outcomeAborted, err: err}
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 512))
	if err != nil {
		return outcome{kind: outcomeAborted, err: fmt.Errorf("reading the answer: %w", err)}
	}
	switch {
	case resp.StatusCode == http.StatusOK && string(msg) == "ok":
		return outcome{kind: outcomeComplete, checked: size}
	case resp.StatusCode == http.StatusUnprocessableEntity, resp.StatusCode == http.StatusOK:
		return outcome{kind: outcomeViolation, err: fmt.Errorf("the upstream says: %s: %s", resp.Status, msg)}
	default:
		return outcome{kind: outcomeRefused, err: fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))}
	}
}

// pattern is the reproducible byte stream of a seed.
type pattern struct{ c *rand.ChaCha8 }

func newPattern(seed uint64) *pattern {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return &pattern{rand.NewChaCha8(key)}
}

func (p *pattern) Read(b []byte) { p.c.Read(b) }

// patternBody is an upload body: left bytes of a pattern, which stops
// after half of them until gate opens (if half > 0).
type patternBody struct {
	p          *pattern
	left, half int64
	sent       int64
	gate       *faultGate
	waited     bool
}

func (b *patternBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if b.gate != nil && !b.waited && b.sent >= b.half {
		b.waited = true
		// The upstream counts this upload halfway once it has read half.
		<-b.gate.open
	}
	n := int64(len(p))
	n = min(n, b.left, 32<<10)
	if b.gate != nil && !b.waited {
		n = min(n, b.half-b.sent)
	}
	b.p.Read(p[:n])
	b.left -= n
	b.sent += n
	return int(n), nil
}

// faultGate holds the requests of a case halfway through their bodies:
// halfway is closed once all have got there, and they go on when open
// is closed.
type faultGate struct {
	id      uint64
	open    chan struct{}
	halfway chan struct{}
	mu      sync.Mutex
	left    int
	seen    map[uint64]bool
}

// arrived says that request key (its seed) is halfway through its body,
// or ended before; only its first call counts.
func (g *faultGate) arrived(key uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen[key] {
		return
	}
	g.seen[key] = true
	if g.left--; g.left == 0 {
		close(g.halfway)
	}
}

// faultUpstream is the origin of the fault run:
//
//	GET  /data?n=N&seed=S[&gate=G]  N bytes of seed S's pattern, chunked
//	POST /data?n=N&seed=S           compares the body with the pattern: 200 "ok", or 422
//
// With a gate, a download stops halfway until the gate opens.
type faultUpstream struct {
	srv          *http.Server
	port         int
	done         chan struct{}
	mu           sync.Mutex
	gates        map[uint64]*faultGate
	nextGate     uint64
	shortUploads atomic.Int64 // uploads whose body ended cleanly but short or wrong
}

func startFaultUpstream() (*faultUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	u := &faultUpstream{port: ln.Addr().(*net.TCPAddr).Port, done: make(chan struct{}), gates: map[uint64]*faultGate{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /data", u.download)
	mux.HandleFunc("POST /data", u.upload)
	// No keep-alive, so that the agents' descriptors return to their
	// counts between cases. (An idle timeout shorter than the agent's
	// would race with the agent reusing a connection the upstream is
	// closing: a POST cannot be retried, and fails with 502.)
	u.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	u.srv.SetKeepAlivesEnabled(false)
	go func() {
		defer close(u.done)
		u.srv.Serve(ln)
	}()
	return u, nil
}

func (u *faultUpstream) close() {
	u.srv.Close()
	<-u.done
}

// newGate returns a gate for n requests.
func (u *faultUpstream) newGate(n int) *faultGate {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.nextGate++
	g := &faultGate{id: u.nextGate, open: make(chan struct{}), halfway: make(chan struct{}), left: n, seen: map[uint64]bool{}}
	u.gates[g.id] = g
	return g
}

func (u *faultUpstream) gate(r *http.Request) *faultGate {
	id, err := strconv.ParseUint(r.URL.Query().Get("gate"), 10, 64)
	if err != nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gates[id]
}

func parseData(r *http.Request) (n int64, seed uint64, err error) {
	q := r.URL.Query()
	if n, err = strconv.ParseInt(q.Get("n"), 10, 64); err != nil || n < 0 {
		return 0, 0, errors.New("want /data?n=BYTES&seed=SEED")
	}
	if seed, err = strconv.ParseUint(q.Get("seed"), 10, 64); err != nil && q.Get("seed") != "" {
		return 0, 0, errors.New("want /data?n=BYTES&seed=SEED")
	}
	return n, seed, nil
}

func (u *faultUpstream) download(w http.ResponseWriter, r *http.Request) {
	n, seed, err := parseData(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	rc := http.NewResponseController(w)
	g := u.gate(r)
	p := newPattern(seed)
	buf := make([]byte, 32<<10)
	var sent int64
	for sent < n {
		m := min(n-sent, int64(len(buf)))
		if g != nil && sent < n/2 {
			m = min(m, n/2-sent)
		}
		p.Read(buf[:m])
		if _, err := w.Write(buf[:m]); err != nil {
			return
		}
		sent += m
		if g != nil && sent == n/2 {
			// The client says when it has read this half.
			rc.Flush()
			select {
			case <-g.open:
			case <-r.Context().Done():
				return
			}
		}
	}
}

func (u *faultUpstream) upload(w http.ResponseWriter, r *http.Request) {
	n, seed, err := parseData(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	g := u.gate(r)
	want := newPattern(seed)
	got := make([]byte, 32<<10)
	exp := make([]byte, 32<<10)
	var read int64
	halfway := false
	arrive := func() {
		if !halfway && g != nil {
			halfway = true
			g.arrived(seed)
		}
	}
	defer arrive()
	for {
		m, err := r.Body.Read(got)
		if m > 0 {
			want.Read(exp[:m])
			if !bytes.Equal(got[:m], exp[:m]) {
				u.shortUploads.Add(1)
				http.Error(w, fmt.Sprintf("wrong bytes at offset %d", read+int64(firstDiff(got[:m], exp[:m]))), http.StatusUnprocessableEntity)
				return
			}
			read += int64(m)
		}
		if read >= n/2 {
			arrive()
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			// The body failed visibly: the client went away.
			http.Error(w, fmt.Sprintf("reading the body after %d bytes: %v", read, err), http.StatusBadRequest)
			return
		}
	}
	if read != n {
		u.shortUploads.Add(1)
		http.Error(w, fmt.Sprintf("the body ended cleanly after %d of %d bytes", read, n), http.StatusUnprocessableEntity)
		return
	}
	io.WriteString(w, "ok")
}
