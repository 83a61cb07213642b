package tunnel

import (
	"bytes"
	"net"
	"testing"

	"golang.org/x/net/http2"
)

// windowConn is the WebSocket side of an h2Window in a test: what the
// window writes is kept, what the agent "sent" is read.
type windowConn struct {
	net.Conn
	out bytes.Buffer
	in  bytes.Buffer
}

func (c *windowConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *windowConn) Read(p []byte) (int, error)  { return c.in.Read(p) }

// TestH2WindowFloorCountsUnread: beyond the budget, a stream holds at most
// its 16 KiB floor, received-and-unread bytes included: an agent that
// fills every grant at once gets no new floor while the stream's reader
// has not read what came; once it has, the stream moves again.
func TestH2WindowFloorCountsUnread(t *testing.T) {
	budget := NewBudget(1 << 20)
	conn := &windowConn{}
	w := newH2Window(conn, budget, 4<<20, func(string, error) {})
	var x bytes.Buffer // what x/net writes
	fr := http2.NewFramer(&x, nil)
	x.WriteString(h2Preface)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 4 << 20})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}, EndHeaders: true, EndStream: true})
	if _, err := w.Write(x.Bytes()); err != nil {
		t.Fatal(err)
	}
	x.Reset()
	// The agent sends everything it was granted.
	st := w.streams[1]
	granted := st.avail
	if granted < h2Floor {
		t.Fatalf("stream granted %d, under its floor", granted)
	}
	afr := http2.NewFramer(&conn.in, nil)
	afr.WriteData(1, false, make([]byte, granted))
	buf := make([]byte, conn.in.Len())
	if _, err := w.Read(buf); err != nil {
		t.Fatal(err)
	}
	budget.Force(budget.Max()) // the budget is spent (other streams)
	used := budget.Used()
	// x/net's reader read 4 KiB: the stream still holds more than its
	// floor unread, so nothing is forced and nothing granted.
	conn.out.Reset()
	fr.WriteWindowUpdate(1, 4<<10)
	w.Write(x.Bytes())
	x.Reset()
	if got := budget.Used(); got != used {
		t.Fatalf("a stream holding %d unread bytes was forced %d more past the budget", granted-4<<10, got-used)
	}
	if conn.out.Len() != 0 {
		t.Fatalf("a WINDOW_UPDATE went to the agent for a stream over its floor: % x", conn.out.Bytes())
	}
	// The reader read the rest: the floor is given again, and the agent
	// told.
	fr.WriteWindowUpdate(1, uint32(granted-4<<10))
	w.Write(x.Bytes())
	if got := budget.Used() - used; got != h2Floor {
		t.Fatalf("after the stream's bytes were read, %d forced past the budget, want the floor %d", got, h2Floor)
	}
	r := http2.NewFramer(nil, &conn.out)
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if wu, ok := f.(*http2.WindowUpdateFrame); !ok || wu.StreamID != 1 || wu.Increment != h2Floor {
		t.Fatalf("the agent got %v, want WINDOW_UPDATE of stream 1 by %d", f, h2Floor)
	}
}
