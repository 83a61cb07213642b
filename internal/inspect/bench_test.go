package inspect

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkWrap: what recording costs a small request (the handler writes
// a short body), against the handler alone; "watched" with a page open
// (/api/events), whose live updates the publisher encodes beside the
// requests (on this machine's cores, not in the request's time).
func BenchmarkWrap(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello, world\n")
	})
	req := httptest.NewRequest("GET", "/small?x=1", nil)
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "*/*")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
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
			w := httptest.NewRecorder()
			for b.Loop() {
				w.Body.Reset()
				handler.ServeHTTP(w, req)
			}
		})
	}
}
