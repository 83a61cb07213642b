package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// gateWriter is a client that takes its time: each Write says it began
// (entered), waits for release, then keeps p, or fails if it is Write
// number failAt.
type gateWriter struct {
	entered chan struct{}
	release chan struct{}
	failAt  int

	mu     sync.Mutex
	writes int
	got    bytes.Buffer
}

var errGateWrite = errors.New("the client went away")

func newGateWriter(failAt int) *gateWriter {
	return &gateWriter{entered: make(chan struct{}, 64), release: make(chan struct{}), failAt: failAt}
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.entered <- struct{}{}
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	if w.writes == w.failAt {
		return 0, errGateWrite
	}
	return w.got.Write(p)
}

func (w *gateWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.got.String()
}

type writeResult struct {
	n   int
	err error
}

// writeNextAsync runs the body's writeNext to w in a goroutine of its own.
func writeNextAsync(body io.ReadCloser, w io.Writer) <-chan writeResult {
	done := make(chan writeResult, 1)
	go func() {
		n, err := body.(*h2cBody).writeNext(w, nil)
		done <- writeResult{n, err}
	}()
	return done
}

func awaitWrite(t *testing.T, ch <-chan writeResult) writeResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(time.Minute):
		t.Fatal("writeNext did not return")
		return writeResult{}
	}
}

// writeNextStream opens stream 1 on a client whose streams' windows stay
// at h2Floor, and has the agent send its head and three 4 KiB frames of
// 'a', 'b' and 'c' (each in a chunk of its own). It returns the response.
func writeNextStream(t *testing.T, budget *Budget) (*h2cRaw, *http.Response) {
	t.Helper()
	r := newH2cRaw(t, h2ClientConfig{Budget: budget, Window: h2Floor})
	resp := make(chan *http.Response, 1)
	go func() {
		res, _, err := r.c.roundTrip(newReq("GET", "/", nil), false)
		if err != nil {
			t.Error(err)
		}
		resp <- res
	}()
	r.until(t, "the request", isHeaders(1))
	r.headers(1, false, ":status", "200", "trailer", "x-sum")
	for _, b := range "abc" {
		r.fr.WriteData(1, false, bytes.Repeat([]byte{byte(b)}, 4<<10))
	}
	res := <-resp
	if res == nil {
		t.FailNow()
	}
	t.Cleanup(func() { res.Body.Close() })
	r.pingAcked(t) // every DATA frame was handled
	return r, res
}

// unread returns the bytes stream 1 holds for its reader.
func (r *h2cRaw) unread(t *testing.T) int64 {
	t.Helper()
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	st := r.c.streams[1]
	if st == nil {
		t.Fatal("stream 1 ended")
	}
	return st.unread
}

// TestH2BodyWriteNextHoldsUntilWritten: the edge's response body writes
// its bytes to a slow client straight from their chunks, which it keeps,
// with the bytes' credit, until the client took them: the agent gets no
// window back meanwhile, and what comes meanwhile waits in chunks of its
// own (a chunk given back early would be reused for it: the client would
// get the new bytes in place of the old). Then the credit goes back, and
// the next call writes what came, and ends with the trailers.
func TestH2BodyWriteNextHoldsUntilWritten(t *testing.T) {
	budget := NewBudget(1 << 20)
	r, res := writeNextStream(t, budget)
	w := newGateWriter(0)
	done := writeNextAsync(res.Body, w)
	<-w.entered // the first chunk is being written

	r.fr.WriteData(1, false, bytes.Repeat([]byte("d"), 4<<10)) // what the window had left
	r.pingAcked(t)
	if got := r.unread(t); got != 16<<10 {
		t.Fatalf("while the client is writing, the stream counts %d bytes unread, want all 16 KiB", got)
	}
	if got := r.rec.windowUpdates(t, 1); len(got) != 0 {
		t.Fatalf("the agent got WINDOW_UPDATEs %v before the client took the bytes", got)
	}
	close(w.release)
	res1 := awaitWrite(t, done)
	if want := "aaaa" + "bbbb" + "cccc"; res1.err != nil || res1.n != 12<<10 || w.String() != expand(want) {
		t.Fatalf("wrote %d bytes (%.8q...), %v; want the 12 KiB held when the wait ended", res1.n, w.String(), res1.err)
	}
	if got := r.unread(t); got != 4<<10 {
		t.Fatalf("after the write, %d bytes unread, want the 4 KiB that came meanwhile", got)
	}
	if got := r.rec.windowUpdates(t, 1); len(got) != 1 || got[0] != 12<<10 {
		t.Fatalf("after the write, the agent got WINDOW_UPDATEs %v, want one of the 12 KiB written", got)
	}

	r.headers(1, true, "x-sum", "42")
	r.pingAcked(t)
	res2 := awaitWrite(t, writeNextAsync(res.Body, w))
	if res2.err != io.EOF || res2.n != 4<<10 || !strings.HasSuffix(w.String(), strings.Repeat("d", 4<<10)) {
		t.Fatalf("the last call wrote %d bytes, %v; want the 4 KiB of d and io.EOF", res2.n, res2.err)
	}
	if got := res.Trailer.Get("X-Sum"); got != "42" {
		t.Fatalf("trailer %q after the body's end", got)
	}
	res3 := awaitWrite(t, writeNextAsync(res.Body, w))
	if res3.n != 0 || res3.err != io.EOF {
		t.Fatalf("after the end: %d, %v", res3.n, res3.err)
	}
	res.Body.Close()
	if u, held := budget.Used(), r.c.reserved(); u != 0 || held != 0 {
		t.Fatalf("after the body's Close, %d bytes of the budget used, %d reserved", u, held)
	}
}

// expand turns each letter of s into 1 KiB of it.
func expand(s string) string {
	var b strings.Builder
	for _, c := range s {
		b.WriteString(strings.Repeat(string(c), 1<<10))
	}
	return b.String()
}

// TestH2BodyWriteNextWriteError: a client that fails midway ends the call
// with its error; the chunks are given back, their bytes dropped (no
// window back to the agent for bytes that never left), and the body's
// Close resets the stream, as after a failed write of what Read returned.
func TestH2BodyWriteNextWriteError(t *testing.T) {
	budget := NewBudget(1 << 20)
	r, res := writeNextStream(t, budget)
	w := newGateWriter(2)
	close(w.release)
	got := awaitWrite(t, writeNextAsync(res.Body, w))
	if !errors.Is(got.err, errGateWrite) || got.n != 4<<10 {
		t.Fatalf("wrote %d bytes, %v; want the first chunk's 4 KiB and the client's error", got.n, got.err)
	}
	if u := r.unread(t); u != 0 {
		t.Fatalf("%d bytes still counted unread after the failed write", u)
	}
	if got := r.rec.windowUpdates(t, 1); len(got) != 0 {
		t.Fatalf("the agent got WINDOW_UPDATEs %v for bytes that never left", got)
	}
	res.Body.Close()
	r.until(t, "the stream's reset", isRST(1, http2.ErrCodeCancel))
	if u, held := budget.Used(), r.c.reserved(); u != 0 || held != 0 {
		t.Fatalf("after the body's Close, %d bytes of the budget used, %d reserved", u, held)
	}
}

// TestH2BodyCloseDuringWriteNext: the body's Close while its bytes are
// being written resets the stream at once; the chunks being written stay
// (and stay counted) until the write returned, then go back, and the call
// says the body was closed.
func TestH2BodyCloseDuringWriteNext(t *testing.T) {
	budget := NewBudget(1 << 20)
	r, res := writeNextStream(t, budget)
	w := newGateWriter(0)
	done := writeNextAsync(res.Body, w)
	<-w.entered
	res.Body.Close()
	r.until(t, "the stream's reset", isRST(1, http2.ErrCodeCancel))
	if held := r.c.reserved(); held != 12<<10 {
		t.Fatalf("while its bytes are being written, a closed stream reserves %d, want the 12 KiB", held)
	}
	close(w.release)
	got := awaitWrite(t, done)
	if !errors.Is(got.err, errResponseClosed) || got.n != 12<<10 || w.String() != expand("aaaabbbbcccc") {
		t.Fatalf("wrote %d bytes, %v; want the 12 KiB and the body's Close", got.n, got.err)
	}
	if u, held := budget.Used(), r.c.reserved(); u != 0 || held != 0 {
		t.Fatalf("after the write, %d bytes of the budget used, %d reserved", u, held)
	}
}
