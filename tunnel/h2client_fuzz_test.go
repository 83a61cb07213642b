package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzH2Client: whatever frames an agent sends (after its SETTINGS) to the
// client's GET on stream 1, POST that expects 100-continue on stream 3 and
// full-duplex stream on 5, the edge's HTTP/2 client neither panics nor
// hangs: every request ends with a response or an error, what the client
// sends is well-formed HTTP/2 (frames and header blocks an agent decodes),
// and once the connection closes every stream has ended and the budget is
// whole again.
func FuzzH2Client(f *testing.F) {
	f.Add(h2FuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "200", "content-length", "2"), EndHeaders: true})
		fr.WriteData(1, true, []byte("ok"))
	}))
	f.Add(h2FuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "100"), EndHeaders: true})
		fr.WriteWindowUpdate(3, 1<<20)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "200", "trailer", "x-t"), EndHeaders: true})
		fr.WriteDataPadded(3, false, []byte("body"), make([]byte, 7))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc("x-t", "t", "x-u", "u"), EndStream: true, EndHeaders: true})
		fr.WriteRSTStream(3, http2.ErrCodeNo)
	}))
	f.Add(h2FuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		block := enc(":status", "200", "x-long", strings.Repeat("v", 100), "set-cookie", "a", "set-cookie", "b")
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block[:7]})
		fr.WriteContinuation(5, true, block[7:])
		fr.WriteData(5, false, []byte("duplex"))
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14},
			http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		fr.WritePing(false, [8]byte{1})
		fr.WriteWindowUpdate(0, 1<<20)
		fr.WriteWindowUpdate(5, 100)
		fr.WriteData(5, true, nil)
	}))
	f.Add(h2FuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "103", "link", "</a>"), EndHeaders: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "404"), EndHeaders: true, EndStream: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "417"), EndHeaders: true})
		fr.WriteData(3, false, make([]byte, 20<<10))
		fr.WriteGoAway(3, http2.ErrCodeNo, nil)
		fr.WriteData(5, false, []byte("x"))
	}))
	f.Add(h2FuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "200", "content-length", "1"), EndHeaders: true})
		fr.WriteData(1, true, []byte("too long"))
		fr.WritePriority(3, http2.PriorityParam{StreamDep: 1, Weight: 3})
		fr.WriteRawFrame(0x20, 0, 5, []byte("unknown"))
		fr.WriteData(7, false, []byte("idle"))
	}))
	f.Add([]byte{0, 0, 4, 8, 0, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte("HTTP/1.1 200 OK\r\n\r\n"))
	f.Fuzz(h2ClientInput)
}

// h2ClientInput is one run of FuzzH2Client.
func h2ClientInput(t *testing.T, input []byte) {
	cli, srv := memPipe()
	defer srv.Close()
	budget := NewBudget(1 << 20)
	c, err := newH2Client(cli, h2ClientConfig{Budget: budget, Window: 64 << 10, MaxHeaderBytes: 4 << 10, ContinueTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// The client's output: frames that decode, until the connection ends;
	// opened is told of each stream's HEADERS, marked of the marker's ack.
	opened := make(chan uint32, 8)
	marked := make(chan struct{})
	drained := make(chan error, 1)
	go func() {
		var preface [len(http2.ClientPreface)]byte
		if _, err := io.ReadFull(srv, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
			close(marked)
			drained <- err
			return
		}
		fr := http2.NewFramer(nil, srv)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.SetMaxReadFrameSize(1<<24 - 1)
		var once bool
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				if !once {
					close(marked)
				}
				if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
					err = nil
				}
				drained <- err
				return
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				select {
				case opened <- f.StreamID:
				default:
				}
			case *http2.PingFrame:
				if f.IsAck() && f.Data == h2FuzzMarker && !once {
					once = true
					close(marked)
				}
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://t.example/", nil)
		if resp, _, err := c.roundTrip(req, false); err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
		}
	})
	waitOpened(t, opened, 1)
	wg.Go(func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://t.example/up", strings.NewReader(strings.Repeat("u", 40<<10)))
		req.Header.Set("Expect", "100-continue")
		if resp, _, err := c.roundTrip(req, false); err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
		}
	})
	waitOpened(t, opened, 3)
	wg.Go(func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://t.example/duplex", nil)
		resp, w, err := c.roundTrip(req, true)
		if err != nil {
			return
		}
		w.Write([]byte("to the agent"))
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		w.CloseWithError(ErrStreamReset)
		resp.Body.Close()
	})
	waitOpened(t, opened, 5)

	var in bytes.Buffer
	fr := http2.NewFramer(&in, nil)
	fr.WriteSettings()
	in.Write(input)
	fr.WritePing(false, h2FuzzMarker)
	srv.Write(in.Bytes())
	// (Input that ends inside a frame swallows the marker: then the
	// client gets 100 ms.)
	select {
	case <-marked:
	case <-time.After(100 * time.Millisecond):
	}
	ended := make(chan struct{})
	go func() {
		wg.Wait()
		close(ended)
	}()
	wait(t, ended, "the requests") // their context ends in 100 ms
	closed := make(chan struct{})
	go func() {
		c.close()
		close(closed)
	}()
	wait(t, closed, "the client's close")
	if err := <-drained; err != nil {
		t.Fatalf("the client's output does not decode: %v", err)
	}
	if u := budget.Used(); u != 0 {
		t.Fatalf("%d bytes of the budget used after the connection's end", u)
	}
	c.mu.Lock()
	n := len(c.streams)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d streams left after the connection's end", n)
	}
}

// waitOpened waits for the client's HEADERS of stream id (the stream is
// then open, and frames of the agent's for it make sense).
func waitOpened(t *testing.T, opened <-chan uint32, id uint32) {
	t.Helper()
	select {
	case got := <-opened:
		if got != id {
			t.Fatalf("stream %d opened, want %d", got, id)
		}
	case <-time.After(time.Minute):
		t.Fatalf("stream %d never opened", id)
	}
}
