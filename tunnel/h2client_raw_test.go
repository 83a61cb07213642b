package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testtool"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2cRaw is the edge's client on a memPipe to a raw agent: the frames the
// agent sends are the test's, those it reads the client's.
type h2cRaw struct {
	c     *h2cConn
	rec   *h2cRecorder
	srv   net.Conn
	fr    *http2.Framer
	enc   *hpack.Encoder
	hbuf  bytes.Buffer
	kinds sync.Map // protocol errors the client counted, by kind
}

// h2cRecorder is the client's end of the pipe, keeping what it writes.
type h2cRecorder struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *h2cRecorder) WriteBuffers(v [][]byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range v {
		r.buf.Write(b)
		m, err := r.Conn.Write(b)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (r *h2cRecorder) queue(p []byte) error {
	_, err := r.WriteBuffers([][]byte{p})
	return err
}

// windowUpdates returns the increments of the WINDOW_UPDATEs the client
// wrote for stream id so far.
func (r *h2cRecorder) windowUpdates(t *testing.T, id uint32) []uint32 {
	t.Helper()
	r.mu.Lock()
	b := bytes.Clone(r.buf.Bytes()[len(http2.ClientPreface):])
	r.mu.Unlock()
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	fr.SetMaxReadFrameSize(1 << 24)
	var got []uint32
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return got
		}
		if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == id {
			got = append(got, wu.Increment)
		}
	}
}

func newH2cRaw(t *testing.T, cfg h2ClientConfig, settings ...http2.Setting) *h2cRaw {
	t.Helper()
	cli, srv := memPipe()
	r := &h2cRaw{rec: &h2cRecorder{Conn: cli}, srv: srv}
	cfg.OnError = func(kind string, err error) {
		n, _ := r.kinds.LoadOrStore(kind, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	c, err := newH2Client(r.rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	t.Cleanup(func() {
		c.close()
		srv.Close()
	})
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(srv, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		t.Fatalf("preface %q, %v", preface, err)
	}
	r.fr = http2.NewFramer(srv, srv)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.fr.SetMaxReadFrameSize(1 << 24)
	r.enc = hpack.NewEncoder(&r.hbuf)
	r.fr.WriteSettings(settings...)
	return r
}

func (r *h2cRaw) kind(name string) int64 {
	if n, ok := r.kinds.Load(name); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

func (r *h2cRaw) block(fields ...string) []byte {
	r.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(r.hbuf.Bytes())
}

func (r *h2cRaw) headers(id uint32, end bool, fields ...string) {
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block(fields...), EndStream: end, EndHeaders: true})
}

// until reads the client's frames until one matches, failing t if the
// connection ends first.
func (r *h2cRaw) until(t *testing.T, what string, match func(http2.Frame) bool) http2.Frame {
	t.Helper()
	r.srv.SetReadDeadline(time.Now().Add(time.Minute))
	defer r.srv.SetReadDeadline(time.Time{})
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
	}
}

func isHeaders(id uint32) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == id
	}
}

func isRST(id uint32, code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id && r.ErrCode == code
	}
}

func isGoAway(code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.ErrCode == code
	}
}

// pingAcked checks that the connection still answers.
func (r *h2cRaw) pingAcked(t *testing.T) {
	t.Helper()
	r.fr.WritePing(false, [8]byte{7})
	r.until(t, "the ping's ack", func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data[0] == 7
	})
}

type h2cResult struct {
	resp *http.Response
	body []byte
	err  error // RoundTrip's, or the body's
}

// start sends req from a goroutine of its own and reads its whole body.
func (r *h2cRaw) start(req *http.Request) <-chan h2cResult {
	return r.startGated(req, nil)
}

// startGated is start with the body read only once gate is closed (nil:
// at once).
func (r *h2cRaw) startGated(req *http.Request, gate <-chan struct{}) <-chan h2cResult {
	done := make(chan h2cResult, 1)
	go func() {
		resp, _, err := r.c.roundTrip(req, false)
		if err != nil {
			done <- h2cResult{err: err}
			return
		}
		if gate != nil {
			<-gate
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- h2cResult{resp, b, err}
	}()
	return done
}

func result(t *testing.T, ch <-chan h2cResult) h2cResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(time.Minute):
		t.Fatal("the request did not end")
		return h2cResult{}
	}
}

// TestH2WindowFloorCountsUnread: beyond the budget, a stream holds at most
// its 16 KiB floor, received-and-unread bytes included: an agent that
// fills every grant at once gets no new floor while the stream's reader
// has not read what came; once it has, the stream moves again. (With a
// floor counting only the window in flight, the first read would force
// 16 KiB more past the budget for a stream holding 138 KiB unread.)
func TestH2WindowFloorCountsUnread(t *testing.T) {
	budget := NewBudget(1 << 20)
	r := newH2cRaw(t, h2ClientConfig{Budget: budget, Window: 4 << 20})
	resp := make(chan *http.Response, 1)
	go func() {
		res, _, err := r.c.roundTrip(newReq("GET", "/", nil), false)
		if err != nil {
			t.Error(err)
		}
		resp <- res
	}()
	r.until(t, "the request", isHeaders(1))
	wu := r.until(t, "the stream's grant", func(f http2.Frame) bool {
		w, ok := f.(*http2.WindowUpdateFrame)
		return ok && w.StreamID == 1
	}).(*http2.WindowUpdateFrame)
	granted := int(h2Floor + wu.Increment)
	if wu.Increment == 0 || granted > 1<<20 {
		t.Fatalf("stream granted %d", granted)
	}
	// The agent sends everything it was granted.
	r.headers(1, false, ":status", "200")
	for sent := 0; sent < granted; sent += 16 << 10 {
		r.fr.WriteData(1, false, make([]byte, min(16<<10, granted-sent)))
	}
	res := <-resp
	if res == nil {
		t.FailNow()
	}
	defer res.Body.Close()
	r.pingAcked(t) // every DATA frame was handled
	if got := r.c.reserved(); got != int64(granted) {
		t.Fatalf("the connection reserves %d, want the %d bytes held", got, granted)
	}
	budget.Force(budget.Max()) // the budget is spent (other streams)
	used := budget.Used()
	grants := len(r.rec.windowUpdates(t, 1))
	// The reader read 4 KiB: the stream still holds more than its floor
	// unread, so nothing is forced and nothing granted.
	if n, err := io.ReadFull(res.Body, make([]byte, 4<<10)); err != nil {
		t.Fatal(n, err)
	}
	if got := budget.Used(); got != used-4<<10 {
		t.Fatalf("a stream holding %d unread bytes: the budget went from %d to %d, want the 4 KiB read released and nothing forced", granted-4<<10, used, got)
	}
	if got := r.rec.windowUpdates(t, 1); len(got) != grants {
		t.Fatalf("a WINDOW_UPDATE went to the agent for a stream over its floor: %v", got[grants:])
	}
	// The reader read the rest: the floor is given again, and the agent
	// told.
	if n, err := io.ReadFull(res.Body, make([]byte, granted-4<<10)); err != nil {
		t.Fatal(n, err)
	}
	if got := budget.Used() - (used - int64(granted)); got != h2Floor {
		t.Fatalf("after the stream's bytes were read, %d forced past the budget, want the floor %d", got, h2Floor)
	}
	if got := r.rec.windowUpdates(t, 1); len(got) != grants+1 || got[grants] != h2Floor {
		t.Fatalf("the agent got WINDOW_UPDATEs %v, want one more by %d", got, h2Floor)
	}
	res.Body.Close()
	if used := budget.Used() - budget.Max(); used != 0 || r.c.reserved() != 0 {
		t.Fatalf("after the body's Close, %d bytes of the budget still used, %d reserved", used, r.c.reserved())
	}
}

// TestH2ClientHostileAgent: what an agent does wrong ends the stream or
// the connection, is counted, and holds nothing: a request fails, or its
// body does, never ends as if complete.
func TestH2ClientHostileAgent(t *testing.T) {
	ok := []string{":status", "200"}
	for _, tc := range []struct {
		name string
		cfg  h2ClientConfig
		// agent answers the request on stream 1 (its HEADERS read)
		agent   func(t *testing.T, r *h2cRaw)
		wantErr error  // of the request
		body    string // the body read before the error
		kind    string // counted once
		alive   bool   // the connection goes on
	}{
		{"DATA past the window", h2ClientConfig{Window: 64 << 10}, func(t *testing.T, r *h2cRaw) {
			r.headers(1, false, ok...)
			for range 4 {
				r.fr.WriteData(1, false, make([]byte, 16<<10))
			}
			r.fr.WriteData(1, false, []byte("x"))
			r.until(t, "GOAWAY", isGoAway(http2.ErrCodeFlowControl))
		}, ErrSessionClosed, strings.Repeat("\x00", 64<<10), "flow_control", false},
		{"head over the limit", h2ClientConfig{MaxHeaderBytes: 1 << 10}, func(t *testing.T, r *h2cRaw) {
			r.headers(1, false, ":status", "200", "x-a", strings.Repeat("a", 700), "x-b", strings.Repeat("b", 700))
			r.until(t, "RST_STREAM", isRST(1, http2.ErrCodeProtocol))
		}, errHeadTooLarge, "", "oversized_head", true},
		{"head far over the limit", h2ClientConfig{MaxHeaderBytes: 1 << 10}, func(t *testing.T, r *h2cRaw) {
			r.headers(1, false, ":status", "200", "x-big", strings.Repeat("b", 64<<10))
			r.until(t, "GOAWAY", isGoAway(http2.ErrCodeProtocol))
		}, ErrSessionClosed, "", "connection_error", false},
		{"reset before the head", h2ClientConfig{}, func(t *testing.T, r *h2cRaw) {
			r.fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
		}, ErrStreamReset, "", "", true},
		{"reset mid-body", h2ClientConfig{}, func(t *testing.T, r *h2cRaw) {
			r.headers(1, false, ok...)
			r.fr.WriteData(1, false, []byte("part"))
			r.fr.WriteRSTStream(1, http2.ErrCodeInternal)
		}, ErrStreamReset, "part", "", true},
		{"NO_ERROR reset after the response", h2ClientConfig{}, func(t *testing.T, r *h2cRaw) {
			r.headers(1, false, ok...)
			r.fr.WriteData(1, true, []byte("whole"))
			r.fr.WriteRSTStream(1, http2.ErrCodeNo)
		}, nil, "whole", "", true},
		{"body shorter than its Content-Length", h2ClientConfig{}, func(t *testing.T, r *h2cRaw) {
			r.headers(1, false, ":status", "200", "content-length", "5")
			r.fr.WriteData(1, true, []byte("ab"))
		}, io.ErrUnexpectedEOF, "ab", "", true},
		{"body longer than its Content-Length", h2ClientConfig{}, func(t *testing.T, r *h2cRaw) {
			r.headers(1, false, ":status", "200", "content-length", "1")
			r.fr.WriteData(1, true, []byte("ab"))
			r.until(t, "RST_STREAM", isRST(1, http2.ErrCodeProtocol))
		}, ErrStreamReset, "", "stream_error", true},
		{"no :status", h2ClientConfig{}, func(t *testing.T, r *h2cRaw) {
			r.headers(1, true, "x-a", "1")
			r.until(t, "RST_STREAM", isRST(1, http2.ErrCodeProtocol))
		}, ErrStreamReset, "", "stream_error", true},
		{"DATA on an idle stream", h2ClientConfig{}, func(t *testing.T, r *h2cRaw) {
			r.fr.WriteData(3, false, []byte("x"))
			r.until(t, "GOAWAY", isGoAway(http2.ErrCodeProtocol))
		}, ErrSessionClosed, "", "connection_error", false},
		{"PUSH_PROMISE", h2ClientConfig{}, func(t *testing.T, r *h2cRaw) {
			r.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: r.block(":method", "GET"), EndHeaders: true})
			r.until(t, "GOAWAY", isGoAway(http2.ErrCodeProtocol))
		}, ErrSessionClosed, "", "connection_error", false},
		{"too many 1xx", h2ClientConfig{}, func(t *testing.T, r *h2cRaw) {
			for range maxInformational + 1 {
				r.headers(1, false, ":status", "103")
			}
			r.headers(1, true, ok...)
		}, nil, "", "too_many_informational", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			budget := NewBudget(0)
			tc.cfg.Budget = budget
			r := newH2cRaw(t, tc.cfg)
			// (A body read while the agent sends would give window back.)
			gate := make(chan struct{})
			done := r.startGated(newReq("GET", "/", nil), gate)
			r.until(t, "the request", isHeaders(1))
			tc.agent(t, r)
			close(gate)
			res := result(t, done)
			if !errors.Is(res.err, tc.wantErr) || tc.wantErr == nil && res.err != nil || string(res.body) != tc.body {
				t.Fatalf("got %d bytes, %v; want %d bytes, %v", len(res.body), res.err, len(tc.body), tc.wantErr)
			}
			if tc.kind != "" && r.kind(tc.kind) != 1 {
				t.Errorf("%s counted %d times, want 1", tc.kind, r.kind(tc.kind))
			}
			if tc.alive {
				r.pingAcked(t)
			} else {
				wait(t, r.c.readDone, "the client's read loop")
			}
			if u := budget.Used(); u != 0 {
				t.Errorf("%d bytes of the budget still used", u)
			}
		})
	}
}

// TestH2ClientSettings: the agent's SETTINGS are applied and acknowledged:
// a request body goes in frames of its SETTINGS_MAX_FRAME_SIZE, within its
// initial stream window, and waits for its WINDOW_UPDATEs.
func TestH2ClientSettings(t *testing.T) {
	r := newH2cRaw(t, h2ClientConfig{}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16 << 10}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	r.until(t, "the SETTINGS' ack", func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		return ok && s.IsAck()
	})
	body := bytes.Repeat([]byte("0123456789"), 4<<10)
	done := r.start(newReq("POST", "/", bytes.NewReader(body)))
	h := r.until(t, "the request", isHeaders(1)).(*http2.MetaHeadersFrame)
	if h.StreamEnded() || h.Header().Flags&http2.FlagHeadersEndHeaders == 0 {
		t.Fatalf("the request's HEADERS: %v", h)
	}
	var got []byte
	first := true
	for {
		f := r.until(t, "the body", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
		if first && len(f.Data()) != 10 || len(f.Data()) > 16<<10 {
			t.Fatalf("a DATA frame of %d bytes (first %t)", len(f.Data()), first)
		}
		if first {
			r.fr.WriteWindowUpdate(1, 1<<20)
			first = false
		}
		got = append(got, f.Data()...)
		if f.StreamEnded() {
			break
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("the agent got %d bytes, want %d", len(got), len(body))
	}
	r.headers(1, true, ":status", "204")
	if res := result(t, done); res.err != nil || res.resp.StatusCode != 204 {
		t.Fatalf("%v", res.err)
	}
}

// TestH2ClientGoAway: after GOAWAY no stream opens, those above its last
// stream ID fail, the others finish, and then the connection closes.
func TestH2ClientGoAway(t *testing.T) {
	r := newH2cRaw(t, h2ClientConfig{})
	first := r.start(newReq("GET", "/", nil))
	r.until(t, "the first request", isHeaders(1))
	second := r.start(newReq("GET", "/", nil))
	r.until(t, "the second request", isHeaders(3))
	r.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	if res := result(t, second); !errors.Is(res.err, ErrSessionClosed) {
		t.Fatalf("the stream above GOAWAY's last: %v", res.err)
	}
	r.pingAcked(t) // GOAWAY was handled
	if _, _, err := r.c.roundTrip(newReq("GET", "/", nil), false); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("a request after GOAWAY: %v", err)
	}
	r.headers(1, false, ":status", "200")
	r.fr.WriteData(1, true, []byte("done"))
	if res := result(t, first); res.err != nil || string(res.body) != "done" {
		t.Fatalf("the stream below GOAWAY's last: %q, %v", res.body, res.err)
	}
	wait(t, r.c.readDone, "the connection's end once idle")
}

// TestH2ClientConnEnd: the connection's end fails every stream, with
// ErrSessionClosed, and releases what it reserved.
func TestH2ClientConnEnd(t *testing.T) {
	budget := NewBudget(0)
	r := newH2cRaw(t, h2ClientConfig{Budget: budget})
	var done []<-chan h2cResult
	for i := range 3 {
		done = append(done, r.start(newReq("GET", "/", nil)))
		r.until(t, "a request", isHeaders(uint32(2*i+1)))
	}
	r.headers(1, false, ":status", "200")
	r.fr.WriteData(1, false, []byte("held"))
	r.pingAcked(t)
	r.srv.Close()
	for _, d := range done {
		if res := result(t, d); !errors.Is(res.err, ErrSessionClosed) {
			t.Errorf("a stream after the connection's end: %v", res.err)
		}
	}
	wait(t, r.c.readDone, "the read loop")
	if u := budget.Used(); u != 0 {
		t.Errorf("%d bytes of the budget still used", u)
	}
	if _, _, err := r.c.roundTrip(newReq("GET", "/", nil), false); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("a request after the end: %v", err)
	}
}

// TestH2ClientStreamIDsExhausted: once the stream IDs ran out, new
// requests fail and the connection closes when its last stream ended (the
// session ends, and the agent reconnects).
func TestH2ClientStreamIDsExhausted(t *testing.T) {
	r := newH2cRaw(t, h2ClientConfig{})
	r.c.wmu.Lock()
	r.c.nextID = h2MaxStreamID - 2
	r.c.wmu.Unlock()
	a := r.start(newReq("GET", "/", nil))
	r.until(t, "the next to last stream", isHeaders(h2MaxStreamID-2))
	b := r.start(newReq("GET", "/", nil))
	r.until(t, "the last stream", isHeaders(h2MaxStreamID))
	if _, _, err := r.c.roundTrip(newReq("GET", "/", nil), false); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("a request past the last ID: %v", err)
	}
	for _, id := range []uint32{h2MaxStreamID - 2, h2MaxStreamID} {
		r.headers(id, true, ":status", "204")
	}
	for _, d := range []<-chan h2cResult{a, b} {
		if res := result(t, d); res.err != nil {
			t.Fatal(res.err)
		}
	}
	r.until(t, "GOAWAY", isGoAway(http2.ErrCodeNo))
	wait(t, r.c.readDone, "the connection's end")
}

// h2cOpened is a full-duplex stream the agent answered.
type h2cOpened struct {
	resp *http.Response
	w    *h2cWriter
}

// openDuplex opens stream 1 as a full-duplex stream and answers it 200.
func (r *h2cRaw) openDuplex(t *testing.T) h2cOpened {
	t.Helper()
	type result struct {
		h2cOpened
		err error
	}
	ch := make(chan result, 1)
	go func() {
		resp, w, err := r.c.roundTrip(newReq("POST", "/", nil), true)
		ch <- result{h2cOpened{resp, w}, err}
	}()
	r.until(t, "the request", isHeaders(1))
	r.headers(1, false, ":status", "200")
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatal(res.err)
		}
		return res.h2cOpened
	case <-time.After(time.Minute):
		t.Fatal("the duplex stream's head did not come back")
		return h2cOpened{}
	}
}

// TestH2ClientDuplexCloseDuringWrite: Close of a full-duplex stream's
// writer does not wait for a Write blocked on the agent's window (an
// upgraded connection's proxy closes it from the other direction's
// goroutine): the stream is reset, and the Write returns.
func TestH2ClientDuplexCloseDuringWrite(t *testing.T) {
	r := newH2cRaw(t, h2ClientConfig{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	o := r.openDuplex(t)
	defer o.resp.Body.Close()
	wrote := make(chan error, 1)
	go func() {
		_, err := o.w.Write([]byte("waits for window"))
		wrote <- err
	}()
	testtool.Eventually(t, "waiting in Write", func() bool {
		if o.w.mu.TryLock() {
			o.w.mu.Unlock()
			return false
		}
		return true
	})
	closed := make(chan struct{})
	go func() {
		o.w.Close()
		close(closed)
	}()
	wait(t, closed, "Close")
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("the blocked Write passed")
		}
	case <-time.After(time.Minute):
		t.Fatal("the blocked Write did not return")
	}
	r.until(t, "RST_STREAM", isRST(1, http2.ErrCodeCancel))
}

// TestH2ClientEndBelowZeroWindow: a request body ends (an empty DATA frame
// with END_STREAM, which takes no window) even when the agent's new
// SETTINGS_INITIAL_WINDOW_SIZE took the stream's send window below zero.
func TestH2ClientEndBelowZeroWindow(t *testing.T) {
	r := newH2cRaw(t, h2ClientConfig{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	o := r.openDuplex(t)
	defer o.resp.Body.Close()
	if _, err := o.w.Write(bytes.Repeat([]byte("x"), 100)); err != nil {
		t.Fatal(err)
	}
	r.until(t, "the body", func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && len(d.Data()) == 100 })
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	r.fr.WritePing(false, [8]byte{9}) // read after the SETTINGS: its ack says they were applied
	r.until(t, "the ping's ack", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() && p.Data[0] == 9 })
	o.w.Close()
	d := r.until(t, "END_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
	if !d.StreamEnded() || len(d.Data()) != 0 {
		t.Fatalf("a DATA frame of %d bytes, END_STREAM %t", len(d.Data()), d.StreamEnded())
	}
}

// TestH2ClientBodyReady: a response body says it is Ready (no read of it
// would wait) once bytes came, and once its end came; not before.
func TestH2ClientBodyReady(t *testing.T) {
	for _, end := range []string{"data", "end"} {
		r := newH2cRaw(t, h2ClientConfig{})
		got := make(chan *http.Response, 1)
		go func() {
			res, _, err := r.c.roundTrip(newReq("GET", "/", nil), false)
			if err != nil {
				t.Error(err)
			}
			got <- res
		}()
		r.until(t, "the request's HEADERS", isHeaders(1))
		r.headers(1, false, ":status", "200")
		var res *http.Response
		select {
		case res = <-got:
		case <-time.After(time.Minute):
			t.Fatal("no response")
		}
		if res == nil {
			return
		}
		rb, ok := res.Body.(ReadyBody)
		if !ok || rb.Ready() {
			t.Fatalf("%s: a body with nothing yet: ReadyBody %v, Ready", end, ok)
		}
		if end == "data" {
			r.fr.WriteData(1, false, []byte("x"))
		} else {
			r.fr.WriteData(1, true, nil)
		}
		r.pingAcked(t) // the client's read loop handled the frame
		if !rb.Ready() {
			t.Fatalf("%s came: not Ready", end)
		}
		res.Body.Close()
	}
}
