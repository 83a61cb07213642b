package inspect

import (
	"net/http"
)

// Recorder records a request that is passed on without a handler to wrap:
// one the agent pipes to its local server as bytes (agent/pipe.go), told
// what the agent parsed of them. It records what Wrap does, with the same
// capture (bodies kept to the limit and counted beyond, SSE events and
// NDJSON lines as they pass, trailers), so that a request reads the same
// on the page whichever way it went. Its methods are called by one
// goroutine at a time.
type Recorder struct {
	c  capture
	w  captureWriter
	rw headerWriter
}

// RecordHead starts recording a request from its HTTP/1.1 head as the
// local server gets it (BeginHead: read when first shown), method and
// target being its request line's. A body is not seen: a pipe's requests
// have none.
func (in *Inspector) RecordHead(method, target string, head []byte) *Recorder {
	rec := &Recorder{c: capture{in: in, e: in.BeginHead(method, target, head)}} // one allocation
	rec.w = captureWriter{ResponseWriter: &rec.rw, c: &rec.c, head: method == http.MethodHead}
	return rec
}

// Note adds to the record's CaptureNote.
func (rec *Recorder) Note(note string) { rec.w.c.e.Note(note) }

// Response records the response's status and header, as the client gets
// it: the caller removed the hop-by-hop fields. A 1xx other than 101 is
// not the response: it is ignored. h is the Recorder's from then on.
func (rec *Recorder) Response(code int, h http.Header) {
	if code < 200 && code != http.StatusSwitchingProtocols {
		return
	}
	rec.rw.h = h
	rec.w.WriteHeader(code)
}

// Body records bytes of the response body as they pass.
func (rec *Recorder) Body(p []byte) {
	if len(p) > 0 && rec.w.status != 0 {
		rec.w.body(p)
	}
}

// End finishes the record, with the response's trailers if it had any,
// failed with err's text when err is not nil. A response that never began
// is recorded as none (the record says err).
func (rec *Recorder) End(trailers http.Header, err error) {
	if rec.w.status != 0 {
		rec.w.finish()
		rec.w.c.e.SetTrailers(false, trailers)
	}
	rec.w.c.handlerReturned(err)
}

// headerWriter is the ResponseWriter under a Recorder's captureWriter:
// only its header is read.
type headerWriter struct{ h http.Header }

func (w *headerWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}
func (w *headerWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *headerWriter) WriteHeader(int)             {}
