package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fuzzH2Handler answers the fuzzed requests with what the agent's handlers
// do: it reads the body, flushes headers, streams, sets trailers, and
// aborts on /abort.
var fuzzH2Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Trailer", "X-T")
	if r.URL.Path == "/continue" {
		w.WriteHeader(http.StatusEarlyHints)
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	w.Write(make([]byte, n%(40<<10)))
	if r.URL.Path == "/abort" {
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("X-T", "t")
	w.Header().Set(http.TrailerPrefix+"X-U", r.Trailer.Get("X-V"))
})

// h2FuzzSeed is the client's side of a few streams, frame by frame.
func h2FuzzSeed(f func(fr *http2.Framer, enc func(fields ...string) []byte)) []byte {
	var buf, hb bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	e := hpack.NewEncoder(&hb)
	f(fr, func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			e.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	})
	return buf.Bytes()
}

func h2Req(method, path string, extra ...string) []string {
	return append([]string{":method", method, ":scheme", "http", ":authority", "t.example", ":path", path}, extra...)
}

// FuzzH2Server: whatever frames an edge sends (after the preface and its
// SETTINGS), the agent's HTTP/2 server neither panics nor hangs, what it
// sends is well-formed HTTP/2 (frames and header blocks a client decodes),
// and once the connection closes it returns, its handlers done.
func FuzzH2Server(f *testing.F) {
	f.Add(h2FuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(h2Req("GET", "/")...), EndStream: true, EndHeaders: true})
	}))
	f.Add(h2FuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(h2Req("POST", "/", "content-length", "5", "trailer", "x-v")...), EndHeaders: true})
		fr.WriteData(1, false, []byte("hello"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc("x-v", "v"), EndStream: true, EndHeaders: true})
		fr.WriteWindowUpdate(0, 1<<20)
		fr.WriteWindowUpdate(1, 1<<20)
	}))
	f.Add(h2FuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		block := enc(h2Req("PUT", "/abort", "expect", "100-continue", "cookie", "a", "cookie", "b")...)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block[:5]})
		fr.WriteContinuation(3, true, block[5:])
		fr.WriteDataPadded(3, false, make([]byte, 100), make([]byte, 10))
		fr.WriteRSTStream(3, http2.ErrCodeCancel)
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14})
		fr.WritePing(false, [8]byte{1})
	}))
	f.Add(h2FuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: enc(h2Req("GET", "/continue")...), EndHeaders: true})
		fr.WritePriority(5, http2.PriorityParam{StreamDep: 1, Weight: 3})
		fr.WriteRawFrame(0x20, 0, 5, []byte("unknown"))
		fr.WriteData(5, true, nil)
		fr.WriteGoAway(5, http2.ErrCodeNo, nil)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: enc(h2Req("GET", "/")...), EndStream: true, EndHeaders: true})
	}))
	f.Add([]byte{0, 0, 4, 8, 0, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(h2FuzzInput)
}

// h2FuzzMarker is the payload of the PING that follows the input: its
// acknowledgement says the server handled all of the input.
var h2FuzzMarker = [8]byte{'s', 'l', 'u', 'i', 'c', 'e', 'e', 'n'}

func h2FuzzInput(t *testing.T, input []byte) {
	cli, srv := memPipe()
	defer cli.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		serveH2(context.Background(), srv, fuzzH2Handler, h2ServerConfig{Window: 64 << 10})
	}()
	// The server's output: frames that decode, until the marker's ack or
	// the end of the connection.
	marked := make(chan struct{})
	drained := make(chan error, 1)
	go func() {
		fr := http2.NewFramer(nil, cli)
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
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == h2FuzzMarker && !once {
				once = true
				close(marked)
			}
		}
	}()
	var in bytes.Buffer
	in.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&in, nil)
	fr.WriteSettings()
	in.Write(input)
	fr.WritePing(false, h2FuzzMarker)
	cli.Write(in.Bytes())
	// (Input that ends inside a frame swallows the marker: then the
	// server gets 100 ms.)
	select {
	case <-marked:
	case <-time.After(100 * time.Millisecond):
	}
	cli.Close()
	wait(t, served, "serveH2")
	if err := <-drained; err != nil {
		t.Fatalf("the server's output does not decode: %v", err)
	}
}
