package tunnel

import (
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Expect: 100-continue through the tunnel (wire.FeatureInformational).
//
// The client of a request that expects 100-continue waits for a 100 before
// it sends its body: the edge must not answer it in the local server's
// place. So, with an agent that announced the feature:
//
//   - the request reaches the agent, and the local server, with its Expect
//     header (in v2 also as headerExpect: the agent's HTTP/2 server takes
//     Expect out of the header);
//   - the edge holds the body back until the agent's 100, or its final
//     response (then the body is never read: the client sends none), or
//     continueTimeout as a last resort;
//   - the agent sends exactly one 100: when the request to the local
//     server wants the body, which is once the local server sent its 100,
//     or once the agent's own wait for it ended (as a client's would). The
//     local server's 100 itself is not passed on (it would be a second).
//
// Without the feature the edge does as before: its HTTP server answers 100
// when the body is first read, and (v2) the agent never sees Expect.

// headerExpect carries Expect: 100-continue to a v2 agent.
const headerExpect = InternalPrefix + "Expect"

// continueTimeout is how long the edge holds a body back for an agent that
// says nothing: a sluice agent answers within its own wait for the local
// server (a second), so this only bounds a broken agent.
const continueTimeout = 10 * time.Second

// expectsContinue reports whether a request with header h and a body
// waits for 100 Continue.
func expectsContinue(h http.Header) bool {
	return httpguts.HeaderValuesContainsToken(h["Expect"], "100-continue")
}

// continueBody calls send before the first Read of a request body: the
// agent's "go on" to the edge.
type continueBody struct {
	io.ReadCloser
	once sync.Once
	send func()
}

func (b *continueBody) Read(p []byte) (int, error) {
	b.once.Do(b.send)
	return b.ReadCloser.Read(p)
}

// no100Writer drops the handler's 100 Continue (the local server's, passed
// on by the agent's Proxy): the request body's first read sends the
// agent's own, once. Other 1xx and everything else go through.
type no100Writer struct{ http.ResponseWriter }

func (w no100Writer) WriteHeader(code int) {
	if code != http.StatusContinue {
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w no100Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush keeps the writer an http.Flusher for handlers that test for one.
func (w no100Writer) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// takeExpectation gives a v2 request the Expect header the edge sent as
// headerExpect (only the edge writes Sluice-* fields), so that the local
// server sees it, and drops the local server's 100: the agent's HTTP/2
// server sends its own when the body is first read.
func takeExpectation(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Header[headerExpect]; ok {
			delete(r.Header, headerExpect)
			if r.Body != nil && r.Body != http.NoBody {
				r.Header.Set("Expect", "100-continue")
				w = no100Writer{w}
			}
		}
		next.ServeHTTP(w, r)
	})
}
