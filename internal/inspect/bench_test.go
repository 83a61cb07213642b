package inspect

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkWrap: what recording costs a small request, against the
// handler alone; "watched" with a page open (/api/events), whose live
// updates the publisher encodes beside the requests (on this machine's
// cores, not in the request's time). The request and the handler are the
// agent's as a profile of it shows them: a GET as its HTTP/2 server hands
// it over (a Body that is not nil, ContentLength 0, the edge's forwarding
// headers), answered as httputil.ReverseProxy with FlushInterval -1 does
// (the upstream's headers, WriteHeader, Write, a Flush through
// http.ResponseController), to a writer that keeps nothing; the
// inspector keeps its default 500 requests, as the agent's does.
func BenchmarkWrap(b *testing.B) {
	body := []byte("hello, world\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr["Content-Type"] = []string{"text/plain; charset=utf-8"}
		hdr["Content-Length"] = []string{"13"}
		hdr["Date"] = []string{"Tue, 01 Dec 2026 20:00:00 GMT"}
		w.WriteHeader(http.StatusOK)
		w.Write(body)
		http.NewResponseController(w).Flush()
	})
	req := httptest.NewRequest("GET", "/small?x=1", nil)
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader("")), 0
	for k, v := range map[string]string{
		"User-Agent": "Go-http-client/1.1", "Accept-Encoding": "gzip",
		"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "bench.localhost:8080", "X-Forwarded-Proto": "http",
	} {
		req.Header.Set(k, v)
	}
	for _, bc := range []struct {
		name  string
		on    bool
		watch bool
	}{{"off", false, false}, {"on", true, false}, {"watched", true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			handler := http.Handler(h)
			if bc.on {
				in := New(Config{})
				defer in.Close()
				if bc.watch {
					sub, err := in.Hub().Subscribe(Topic, "")
					if err != nil {
						b.Fatal(err)
					}
					defer sub.Close()
					defer in.watch()()
				}
				handler = in.Wrap(h)
			}
			b.ReportAllocs()
			w := &discardWriter{h: http.Header{}}
			for b.Loop() {
				clear(w.h)
				handler.ServeHTTP(w, req)
			}
		})
	}
}

// discardWriter is a ResponseWriter that keeps nothing but its header map
// (cleared by the caller between requests), and flushes.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) FlushError() error           { return nil }
