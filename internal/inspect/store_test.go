package inspect

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBodyLimitAndCounting(t *testing.T) {
	in := New(Config{BodyLimit: 10})
	defer in.Close()
	e := in.Begin(httptest.NewRequest("POST", "/x?q=1", nil), "")
	e.RequestBody([]byte("0123456"))
	e.RequestBody([]byte("789abc"))
	e.Response(100, nil) // informational: not the response
	e.Response(200, map[string][]string{"Content-Type": {"text/plain"}})
	e.ResponseBody([]byte("hello"))
	e.End(nil)
	r, ok := in.Get(e.ID())
	if !ok {
		t.Fatal("not found")
	}
	if r.Path != "/x?q=1" || r.Status != 200 || r.State != StateDone {
		t.Fatalf("got %+v", r)
	}
	if r.RequestBodySize != 13 || r.RequestBodyCaptured != 10 || !r.RequestBodyTruncated {
		t.Fatalf("request body: size %d captured %d truncated %v", r.RequestBodySize, r.RequestBodyCaptured, r.RequestBodyTruncated)
	}
	body, _, _ := in.Body(e.ID(), true)
	if !bytes.Equal(body, []byte("0123456789")) {
		t.Fatalf("request body %q", body)
	}
	if r.ResponseBodySize != 5 || r.ResponseBodyTruncated {
		t.Fatalf("response body: %+v", r)
	}
}

func TestKeepsNewestWithinLimits(t *testing.T) {
	in := New(Config{MaxRequests: 3, BodyLimit: 100, MaxBytes: 1000})
	defer in.Close()
	var last *Entry
	for range 5 {
		last = in.Begin(httptest.NewRequest("GET", "/", nil), "")
		last.ResponseBody([]byte(strings.Repeat("x", 100)))
		last.End(nil)
	}
	list := in.List()
	if len(list) != 3 || list[0].ID != last.ID() || list[0].ID != "5" || list[2].ID != "3" {
		t.Fatalf("kept %v", ids(list))
	}
	// The byte cap: a request in flight takes the room of finished ones.
	big := in.Begin(httptest.NewRequest("GET", "/big", nil), "")
	big.ResponseBody(bytes.Repeat([]byte("y"), 100))
	for range 20 {
		e := in.Begin(httptest.NewRequest("GET", "/", nil), "")
		e.ResponseBody([]byte(strings.Repeat("z", 100)))
		e.End(nil)
	}
	if in.bytes > in.cfg.MaxBytes {
		t.Fatalf("captured %d bytes, cap %d", in.bytes, in.cfg.MaxBytes)
	}
}

func ids(rs []Request) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func TestItemsBounded(t *testing.T) {
	in := New(Config{BodyLimit: 1000})
	defer in.Close()
	e := in.Begin(httptest.NewRequest("GET", "/events", nil), "")
	e.SetStream(StreamSSE)
	for range 100 {
		e.AddItem(Item{Kind: "event", Event: "message", Text: strings.Repeat("d", 36)})
	}
	r, _ := in.Get(e.ID())
	if r.ItemCount != 100 || len(r.Items) != 10 || r.ItemsDropped != 90 || r.Items[9].N != 10 {
		t.Fatalf("count %d kept %d dropped %d", r.ItemCount, len(r.Items), r.ItemsDropped)
	}
}

// Headers are kept flat until looked at, then as they were; a name
// without values is left out.
func TestFlatHeader(t *testing.T) {
	h := http.Header{"Set-Cookie": {"a=1", "b=2"}, "Content-Type": {"text/plain"}, "X-Empty": {}, "X-Blank": {""}}
	f, size := flatten(h)
	if size != int64(2*(10+4)+3+3+12+10+4+7+4) {
		t.Fatalf("size %d", size)
	}
	delete(h, "X-Empty")
	if got := f.header(); fmt.Sprint(got) != fmt.Sprint(h) {
		t.Fatalf("%v, want %v", got, h)
	}
	if f, size := flatten(http.Header{"X-Empty": nil}); f != nil || size != 0 || len(f.header()) != 0 || f.header() == nil {
		t.Fatalf("%v %d", f, size)
	}
}

// A request recorded from its head (a pipe's) shows its method and target
// at once, and its fields once read, which is when the record is first
// shown, not before: a head nobody looks at is never parsed. A head that
// cannot be read shows its request line and a note.
func TestBeginHead(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	head := "GET /items?x=1 HTTP/1.1\r\nHost: app.example\r\nUser-Agent: curl/8\r\nX-Forwarded-For: 192.0.2.7, 10.0.0.1\r\nAccept: a\r\nAccept: b\r\n\r\n"
	e := in.BeginHead("GET", "/items?x=1", []byte(head))
	in.mu.Lock()
	raw := len(e.reqHdr) == 2 && e.reqHdr[0] == rawHead && e.reqHdr[1] == head
	in.mu.Unlock()
	if !raw {
		t.Fatalf("the head is not kept as it came until shown: %q", e.reqHdr)
	}
	e.End(nil)
	r, _ := in.Get(e.ID())
	if r.Method != "GET" || r.Path != "/items?x=1" || r.Host != "app.example" || r.Proto != "HTTP/1.1" || r.RemoteAddr != "192.0.2.7" ||
		r.RequestHeaders.Get("User-Agent") != "curl/8" || len(r.RequestHeaders["Accept"]) != 2 || r.CaptureNote != "" {
		t.Errorf("%+v", r)
	}
	if got := e.hdrBytes; got != int64(len(head)) {
		t.Errorf("counted %d header bytes, want %d", got, len(head))
	}

	cut := in.BeginHead("GET", "/big", []byte("GET /big HTTP/1.1\r\nHost: app.example\r\nX-Long: aaaa"))
	r, _ = in.Get(cut.ID())
	if r.Method != "GET" || r.Path != "/big" || len(r.RequestHeaders) != 0 || !strings.Contains(r.CaptureNote, "could not be read") {
		t.Errorf("a cut head: %+v", r)
	}
}
