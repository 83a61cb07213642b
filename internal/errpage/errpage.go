// Package errpage writes the error responses of the edge and the agent:
// a small HTML page for browsers, JSON for clients that ask for it, plain
// text otherwise, always naming what went wrong and where, and carrying a
// request id. Pages go to public visitors: they say what happened in
// words fit for anyone, and the internal detail (socket errors, resolver
// addresses) goes to the log of whoever wrote the page, under the same
// request id.
package errpage

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/http"
	"strings"
)

// IDHeader carries the request id of an error page.
const IDHeader = "X-Sluice-Request-Id"

// Write answers r with status, a short title and a detail sentence, and
// returns the page's request id, for the caller's log line. The body is
// JSON ({"error":{"code","status","message","request_id"}}) when the
// client accepts application/json and not text/html, HTML when it accepts
// text/html, and text otherwise. code is a stable machine-readable name
// such as "tunnel_not_found". The id is also in the IDHeader field.
func Write(w http.ResponseWriter, r *http.Request, status int, code, title, detail string) (id string) {
	id = newID()
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Sluice-Error", code)
	h.Set(IDHeader, id)
	h.Del("Content-Length")
	accept := r.Header.Get("Accept")
	switch {
	case strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html"):
		h.Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
			"code": code, "status": status, "message": title + ": " + detail, "request_id": id,
		}})
	case strings.Contains(accept, "text/html"):
		h.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		t, d := html.EscapeString(title), html.EscapeString(detail)
		w.Write([]byte(`<!doctype html><meta charset="utf-8"><title>` + t + `</title>` +
			`<style>body{font:16px system-ui,sans-serif;margin:3rem;max-width:40rem;color:#222}code{background:#eee;padding:0 .2em}</style>` +
			`<h1>` + t + `</h1><p>` + d + `</p><p><small>sluice · ` + html.EscapeString(code) + ` · request id <code>` + id + `</code></small></p>`))
	default:
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		w.Write([]byte(title + ": " + detail + " (request id " + id + ")\n"))
	}
	return id
}

// newID returns a random request id: 16 hex digits.
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IsGRPC reports whether r is a gRPC call (Content-Type application/grpc,
// with or without a subtype such as +proto).
func IsGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}
