package h1_test

import (
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// echoRequest answers with what the server made of the request: what a
// difference between the two servers' parsing would show.
var echoRequest = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	var sb strings.Builder
	sb.WriteString(r.Method + " " + r.RequestURI + " " + r.URL.String() + " " + r.Proto + " host=" + r.Host)
	sb.WriteString(" length=" + strconv.FormatInt(r.ContentLength, 10) + " te=" + strings.Join(r.TransferEncoding, ",") + " close=" + strconv.FormatBool(r.Close) + "\n")
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		sb.WriteString(k + ": " + strings.Join(r.Header[k], " | ") + "\n")
	}
	sb.WriteString("body " + strconv.Quote(string(b)))
	if err != nil {
		sb.WriteString(" error " + err.Error())
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, sb.String())
})

// FuzzServe sends the same bytes to h1 (with its fallback) and to
// net/http's server alone, and wants the same answer back: any request h1
// serves, it parses and answers as net/http would; any other goes to
// net/http whole.
func FuzzServe(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /a?b=c HTTP/1.1\r\nHost: t\r\nX: 1\r\nx: 2\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloPOST /q HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nshort",
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\r\nHost: t\r\n Folded: x\r\n\r\n",
		"GET / HTTP/1.1\nHost: t\n\n",
		"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
		"GET http://other/x HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := serveBoth(f, echoRequest, nil)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 8<<10 {
			return
		}
		want := canonical(send(t, s.std, in))
		got := strings.ReplaceAll(send(t, s.lean, in), fallbackMark+": net/http\r\n", "")
		if got = canonical(got); got != want {
			t.Fatalf("for %q\nh1 with its fallback sent\n%q\nnet/http sent\n%q", in, got, want)
		}
	})
}

// send writes in, ends the client's side, and returns all the server sent
// until it closed the connection.
func send(t *testing.T, addr string, in []byte) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	c.Write(in)
	c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c) // a reset after the answer: what came is what counts
	return string(b)
}
