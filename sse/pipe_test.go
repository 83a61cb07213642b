package sse

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// pipeTransport is an in-memory event-stream server for the client's tests
// that run in a synctest bubble, where real sockets would not let the fake
// clock advance. Each request n is answered 200 text/event-stream at once;
// handle then writes the body, which ends when handle returns or the
// request's context ends. handle runs on a goroutine of its own and must
// return when r.Context() ends.
type pipeTransport struct {
	handle func(n int, r *http.Request, w io.Writer)

	mu     sync.Mutex
	reqs   []*http.Request // as received, bodies read into bodies
	bodies []string
	times  []time.Time // when each request arrived
	wg     sync.WaitGroup
}

func (p *pipeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	p.mu.Lock()
	n := len(p.reqs)
	p.reqs = append(p.reqs, req)
	p.bodies = append(p.bodies, string(body))
	p.times = append(p.times, time.Now())
	p.mu.Unlock()

	pr, pw := io.Pipe()
	stop := context.AfterFunc(req.Context(), func() { pw.CloseWithError(req.Context().Err()) })
	p.wg.Go(func() {
		p.handle(n, req, pw)
		stop()
		pw.CloseWithError(req.Context().Err()) // nil: EOF
	})
	return &http.Response{
		Status:     "200 OK",
		StatusCode: http.StatusOK,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{"Content-Type": {"text/event-stream"}},
		Body:       pr,
		Request:    req,
	}, nil
}

// client returns an http.Client on the transport.
func (p *pipeTransport) client() *http.Client { return &http.Client{Transport: p} }

// requests returns how many requests arrived so far.
func (p *pipeTransport) requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.reqs)
}

// gaps returns the time between consecutive requests.
func (p *pipeTransport) gaps() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var gaps []time.Duration
	for i := 1; i < len(p.times); i++ {
		gaps = append(gaps, p.times[i].Sub(p.times[i-1]))
	}
	return gaps
}
