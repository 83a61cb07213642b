package errpage

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// A gRPC call gets a trailers-only answer: HTTP 200 and a status its
// client shows, never a page it cannot read.
func TestWriteGRPC(t *testing.T) {
	for status, want := range map[int]string{502: "14", 504: "4", 404: "12", 403: "7", 500: "2"} {
		r := httptest.NewRequest("POST", "/pkg.Svc/Call", nil)
		r.Header.Set("Content-Type", "application/grpc+proto")
		w := httptest.NewRecorder()
		id := Write(w, r, status, "upstream_error", "Local server error", "the request to 127.0.0.1:50051 failed.")
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/grpc" || w.Header().Get("Grpc-Status") != want {
			t.Errorf("HTTP %d: got %d %q grpc-status %q, want 200 application/grpc %s", status, w.Code, w.Header().Get("Content-Type"), w.Header().Get("Grpc-Status"), want)
		}
		msg, err := url.PathUnescape(w.Header().Get("Grpc-Message"))
		if err != nil || !strings.Contains(msg, "Local server error") || !strings.Contains(msg, id) {
			t.Errorf("grpc-message %q (%v)", w.Header().Get("Grpc-Message"), err)
		}
		if w.Body.Len() != 0 {
			t.Errorf("a body of %d bytes", w.Body.Len())
		}
	}
	// Not gRPC: the page as before.
	r := httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	Write(w, r, 502, "upstream_error", "Local server error", "x")
	if w.Code != 502 || w.Header().Get("Grpc-Status") != "" {
		t.Errorf("plain request: %d, grpc-status %q", w.Code, w.Header().Get("Grpc-Status"))
	}
}
