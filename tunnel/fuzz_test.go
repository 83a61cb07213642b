package tunnel

import (
	"bytes"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseHead: the upgrade response head parser never panics, accepts
// only a status line with a three-digit code, and what it accepts
// round-trips: the head written again from its result parses to the same.
func FuzzParseHead(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: close\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 400 Bad Request\r\n\r\n",
		"HTTP/1.1 101\r\n\r\n",
		" 100\n0:0\n \n\n",
		"HTTP/1.0 200 OK\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
		"garbage\r\n\r\n",
		"HTTP/1.1 99 Low\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nFolded: a\r\n b\r\n\r\n",
		"\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		status, h, err := parseHead(head)
		if err != nil {
			return
		}
		if status < 100 || status > 999 {
			t.Fatalf("status %d accepted", status)
		}
		var again bytes.Buffer
		fmt.Fprintf(&again, "HTTP/1.1 %03d X\r\n", status)
		if err := http.Header(h).Write(&again); err != nil {
			t.Fatal(err)
		}
		again.WriteString("\r\n")
		status2, h2, err := parseHead(again.Bytes())
		if err != nil {
			t.Fatalf("%q parsed, its rewrite %q did not: %v", head, again.Bytes(), err)
		}
		if status2 != status || !reflect.DeepEqual(clean(h), clean(h2)) {
			t.Fatalf("round trip: %d %v, then %d %v", status, h, status2, h2)
		}
	})
}

// clean drops empty header lists, which Header.Write leaves out, and the
// spaces around values, which parsing trims (a folded line can leave one).
func clean(h http.Header) http.Header {
	out := http.Header{}
	for k, vv := range h {
		for _, v := range vv {
			out[k] = append(out[k], strings.TrimSpace(v))
		}
	}
	return out
}
