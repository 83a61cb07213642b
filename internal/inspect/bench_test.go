package inspect

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkWrap: what recording costs a small request (the handler writes
// a short body), against the handler alone.
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
		name string
		h    http.Handler
	}{{"off", h}, {"on", New(Config{}).Wrap(h)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			w := httptest.NewRecorder()
			for b.Loop() {
				w.Body.Reset()
				bc.h.ServeHTTP(w, req)
			}
		})
	}
}
