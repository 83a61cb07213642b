package h1client

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"
)

// headRequest makes a request from a method, a target (parsed as a URL),
// a Host and header lines ("Key: value" each).
func headRequest(method, target, host, lines string) (*http.Request, bool) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, false
	}
	h := http.Header{}
	for line := range strings.SplitSeq(lines, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			h[k] = append(h[k], strings.TrimPrefix(v, " "))
		}
	}
	return &http.Request{Method: method, URL: u, Host: host, Header: h}, true
}

// checkHead fails if appendRequestHead takes req and writes other bytes
// than Request.Write, or takes one Request.Write refuses. It reports
// whether appendRequestHead took it.
func checkHead(t *testing.T, req *http.Request) bool {
	t.Helper()
	got, _, ok := appendRequestHead([]byte("prefix"), req, nil)
	if !ok {
		if string(got) != "prefix" {
			t.Errorf("refused, but appended %q", got)
		}
		return false
	}
	var want bytes.Buffer
	if err := req.Write(&want); err != nil {
		t.Fatalf("appendRequestHead wrote %q; Request.Write refused: %v", got, err)
	}
	if got := string(got[len("prefix"):]); got != want.String() {
		t.Errorf("appendRequestHead wrote\n%q\nRequest.Write\n%q", got, want.String())
	}
	return true
}

func TestRequestHeadMatchesWrite(t *testing.T) {
	for _, tc := range []struct {
		method, target, host, lines string
		take                        bool
	}{
		{"GET", "http://up.example:8080/small", "", "User-Agent: curl/8\nAccept: */*\nX-Forwarded-For: 127.0.0.1", true},
		{"", "http://up.example/a%20b?q=1&r=%zz", "public.example", "Accept: a\nAccept: b", true},
		{"DELETE", "http://up.example/x", "", "", true}, // no User-Agent field: Go's
		{"POST", "http://up.example/x", "", "User-Agent:", true},
		{"HEAD", "http://up.example/", "h", "Cookie: a=1; b=2\nZz: last\nA: first", true},
		{"OPTIONS", "http://up.example/*", "[::1]:80", "Host: ignored\nContent-Length: 5\nTransfer-Encoding: chunked\nTrailer: x", true},
		{"get", "http://up.example/", "", "", true},
		{"GET", "http://up.example/", "bücher.example", "", false},      // punycode
		{"GET", "http://up.example/", "[fe80::1%25eth0]:80", "", false}, // zone
		{"GET", "http://up.example/", "a b", "", false},                 // invalid host
		{"GET", "http://up.example/", "", "X: two  \nY: a", false},      // trimmed
		{"GET", "http://up.example/", "", "User-Agent:  padded", false},
		{"CONNECT", "http://up.example/", "", "", false},
	} {
		req, ok := headRequest(tc.method, tc.target, tc.host, tc.lines)
		if !ok {
			t.Fatalf("%q: bad target", tc.target)
		}
		if took := checkHead(t, req); took != tc.take {
			t.Errorf("%s %s host %q: taken %v, want %v", tc.method, tc.target, tc.host, took, tc.take)
		}
	}

	var req *http.Request
	// A body, Close (Connection: close added), or a trace that watches
	// the writing: Request.Write's.
	req, _ = headRequest("GET", "http://up.example/", "", "")
	req.Close = true
	if checkHead(t, req) {
		t.Error("a request with Close was taken")
	}
	req, _ = headRequest("POST", "http://up.example/", "", "")
	req.Body, req.ContentLength = http.NoBody, 3
	if checkHead(t, req) {
		t.Error("a request with a length was taken")
	}
	req, _ = headRequest("GET", "http://up.example/", "", "")
	req = req.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{WroteHeaders: func() {}}))
	if checkHead(t, req) {
		t.Error("a request with a WroteHeaders trace was taken")
	}
	req = req.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: nil}))
	if !checkHead(t, req) {
		t.Error("a request whose trace does not watch the writing was refused")
	}
}

// FuzzRequestHead: whatever the request, appendRequestHead writes what
// Request.Write does, or leaves it to Request.Write.
func FuzzRequestHead(f *testing.F) {
	f.Add("GET", "http://up.example:8080/small?x=1", "", "User-Agent: curl/8\nAccept: */*")
	f.Add("PATCH", "http://[::1]:1/p/../q#frag", "h.example:99", "X-A: 1\nX-A: 2\nx-lower: v")
	f.Add("", "/only/path", "", "Content-Length: 9")
	f.Fuzz(func(t *testing.T, method, target, host, lines string) {
		req, ok := headRequest(method, target, host, lines)
		if !ok {
			return
		}
		checkHead(t, req)
	})
}
