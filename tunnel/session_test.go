package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var allFeatures = []string{wire.FeatureRequestStream, wire.FeatureWindow, wire.FeatureCancel, wire.FeatureMultiValueHeaders, wire.FeatureInitialWindow}

// v2Features selects protocol v2 in tunnelSession (the subprotocol's name
// as a pseudo-feature). v2 carries trailers, cancels and windows natively.
var v2Features = []string{wire.FeatureRequestStream, wire.FeatureWindow, wire.FeatureCancel, wire.FeatureMultiValueHeaders, wire.FeatureTrailers, Subprotocol}

// modes are the feature sets every session test runs with: our own agent
// over v1, a plain Jetty peer that announced nothing, and protocol v2.
var modes = map[string][]string{"extensions": allFeatures, "plain": nil, "v2": v2Features}

// tunnelFront starts an edge session and an agent serving upstream over a
// real WebSocket, and a public reverse proxy whose Transport is the
// session: the Proxy, as at the edge. It returns the public URL.
func tunnelFront(t *testing.T, features []string, upstream http.Handler) string {
	t.Helper()
	return tunnelFrontB(t, features, upstream)
}

// tunnelFrontB is tunnelFront for tests and benchmarks.
func tunnelFrontB(t testing.TB, features []string, upstream http.Handler) string {
	t.Helper()
	sess := tunnelSession(t, features, upstream)
	front := httptest.NewServer(NewProxy(Proxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", pr.In.Host
		},
		Transport: sess,
		Buffers:   &BufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}, nil))
	t.Cleanup(func() {
		front.CloseClientConnections()
		front.Close()
	})
	return front.URL
}

// tunnelSession starts an edge session and an agent serving upstream over a
// real WebSocket, and returns the session, to be used as a RoundTripper.
// features are what the agent announces (nil: none, as a plain Jetty
// agent); Subprotocol among them selects protocol v2.
func tunnelSession(t testing.TB, features []string, upstream http.Handler) Session {
	t.Helper()
	cfg := Config{V1: V1Config{Window: benchWindow}}
	return sessionWith(t, cfg, cfg, features, upstream)
}

// sessionWith is tunnelSession with the edge's config and the agent's.
func sessionWith(t testing.TB, edgeCfg, agentCfg Config, features []string, upstream http.Handler) Session {
	t.Helper()
	url, sessions := acceptor(t, edgeCfg)
	ctx, cancel := context.WithCancel(context.Background())
	dc := DialConfig{Config: agentCfg, URL: url, TunnelID: "t", Protocol: ProtocolV1, Features: []string{}}
	if wire.HasFeature(features, Subprotocol) {
		dc.Protocol = ProtocolV2
	} else if features != nil {
		dc.Features = features
	}
	as, err := Dial(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		as.Serve(ctx, upstream)
	}()
	sess := <-sessions
	t.Cleanup(func() {
		cancel()
		sess.Close()
		wg.Wait()
	})
	return sess
}

// acceptor serves Accept on a loopback server, granting every registration,
// and runs each session until the test ends. It returns the agents' URL
// and the sessions as they open.
func acceptor(t testing.TB, cfg Config) (string, <-chan Session) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sessions := make(chan Session, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, AcceptConfig{Config: cfg, Authorize: func(_ context.Context, reg *Registration) (*Grant, error) {
			return &Grant{TunnelID: reg.TunnelID, PublicURL: "http://" + reg.TunnelID + ".example"}, nil
		}})
		if err != nil {
			return
		}
		sessions <- s
		s.Run(ctx)
	}))
	t.Cleanup(func() {
		cancel()
		srv.CloseClientConnections()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http"), sessions
}

func forModes(t *testing.T, f func(t *testing.T, features []string)) {
	for name, features := range modes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, features)
		})
	}
}

func TestRoundTrips(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, features []string) {
		upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2; Path=/")
			w.Header().Set("X-Method", r.Method)
			w.Header().Set("X-Query", r.URL.RawQuery)
			w.Header().Set("X-Path", r.URL.EscapedPath())
			switch r.URL.Path {
			case "/204":
				w.WriteHeader(204)
				return
			case "/304":
				w.WriteHeader(304)
				return
			}
			w.Header().Set("Content-Length", itoa(len(body)))
			w.Write(body)
		})
		url := tunnelFront(t, features, upstream)
		bin := make([]byte, 300<<10)
		rand.Read(bin)
		for _, method := range []string{"GET", "POST", "PUT", "DELETE", "HEAD"} {
			body := bin
			if method == "GET" || method == "HEAD" {
				body = nil
			}
			req, _ := http.NewRequest(method, url+"/a%20b/c?x=1&y=%2F", bytes.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(got, body) {
				t.Fatalf("%s: status %d, %d bytes back of %d", method, resp.StatusCode, len(got), len(body))
			}
			if resp.Header.Get("X-Method") != method || resp.Header.Get("X-Query") != "x=1&y=%2F" || resp.Header.Get("X-Path") != "/a%20b/c" {
				t.Fatalf("%s: headers %v", method, resp.Header)
			}
			if cookies := resp.Header.Values("Set-Cookie"); len(cookies) != 2 && features != nil {
				t.Fatalf("Set-Cookie = %q", cookies)
			}
		}
		for _, code := range []int{204, 304} {
			resp, err := http.Get(url + "/" + itoa(code))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != code {
				t.Fatalf("status %d, want %d", resp.StatusCode, code)
			}
		}
	})
}

func itoa(n int) string { return fmtInt(n) }

func fmtInt(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestStreamingHeadersFirstAndCancel(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, features []string) {
		cancelled := make(chan struct{})
		send := make(chan string)
		upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			for {
				select {
				case msg := <-send:
					io.WriteString(w, "data: "+msg+"\n\n")
					http.NewResponseController(w).Flush()
				case <-r.Context().Done():
					close(cancelled)
					return
				}
			}
		})
		url := tunnelFront(t, features, upstream)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := http.DefaultClient.Do(req) // headers before any event
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("headers %v", resp.Header)
		}
		buf := make([]byte, 100)
		for _, msg := range []string{"one", "two"} {
			start := time.Now()
			send <- msg
			n, err := resp.Body.Read(buf)
			if err != nil || string(buf[:n]) != "data: "+msg+"\n\n" {
				t.Fatalf("read %q %v", buf[:n], err)
			}
			t.Logf("event through the tunnel in %v", time.Since(start))
		}
		cancel()
		resp.Body.Close()
		// The rule is "within a second"; on a busy machine the test only
		// checks that it happens (the figure is logged).
		if features == nil {
			// A plain Jetty agent has no http_cancel: the upstream
			// learns only when the tunnel goes.
			return
		}
		left := time.Now()
		select {
		case <-cancelled:
			t.Logf("upstream request cancelled %v after the client left", time.Since(left))
		case <-time.After(time.Minute):
			t.Fatal("upstream request not cancelled a minute after the client left")
		}
	})
}

func TestUpstreamFailureAbortsClient(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, features []string) {
		upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000000")
			w.Write(make([]byte, 1000))
			http.NewResponseController(w).Flush() // as ReverseProxy does, with FlushInterval -1
			panic(http.ErrAbortHandler)           // what ReverseProxy does when its upstream breaks
		})
		url := tunnelFront(t, features, upstream)
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatal("client saw a clean end of a broken body")
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Logf("client error: %v", err)
		}
	})
}

// Response trailers cross with the trailers feature: announced with
// Trailer and set after a chunked body, or unannounced with
// http.TrailerPrefix, by a real upstream behind the agent's reverse proxy;
// the public client (HTTP/1.1) has them in resp.Trailer after the body. A
// plain peer gets no trailers, and no Trailer header either.
func TestTrailers(t *testing.T) {
	t.Parallel()
	withTrailers := append(append([]string{}, allFeatures...), wire.FeatureTrailers)
	for name, features := range map[string][]string{"trailers": withTrailers, "extensions": allFeatures, "plain": nil, "v2": v2Features} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testTrailers(t, features)
		})
	}
}

func testTrailers(t *testing.T, features []string) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(200)
		for _, s := range []string{"one ", "two ", "three"} {
			io.WriteString(w, s)
			http.NewResponseController(w).Flush() // chunked, in pieces
		}
		if r.URL.Path == "/big" {
			w.Write(make([]byte, 100<<10)) // several chunk frames
		}
		w.Header().Set("X-Checksum", "sha256=abc")
		w.Header().Add("X-Checksum", "second")
		w.Header().Set(http.TrailerPrefix+"X-Late", "unannounced")
	}))
	t.Cleanup(upstream.Close)
	target := strings.TrimPrefix(upstream.URL, "http://")
	agentProxy := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.Out.URL.Scheme, pr.Out.URL.Host = "http", target },
		FlushInterval: -1,
	}
	url := tunnelFront(t, features, agentProxy)
	trailers := wire.HasFeature(features, wire.FeatureTrailers)
	client := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: false}}
	t.Cleanup(client.CloseIdleConnections)
	for _, path := range []string{"/", "/big"} {
		resp, err := client.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 1 || resp.ContentLength != -1 || len(resp.TransferEncoding) == 0 {
			t.Fatalf("%s: %s, length %d, transfer encoding %q", path, resp.Proto, resp.ContentLength, resp.TransferEncoding)
		}
		if _, ok := resp.Trailer["X-Checksum"]; ok != trailers {
			t.Errorf("%s: announced trailers %v", path, resp.Trailer)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !strings.HasPrefix(string(body), "one two three") {
			t.Fatalf("%s: body %.20q, %v", path, body, err)
		}
		if resp.Header.Get("Trailer") != "" || resp.Header.Get("X-Checksum") != "" {
			t.Errorf("%s: trailers among the headers: %v", path, resp.Header)
		}
		if !trailers {
			if len(resp.Trailer) != 0 {
				t.Errorf("%s: trailers from a peer without the feature: %v", path, resp.Trailer)
			}
			continue
		}
		if got := resp.Trailer.Values("X-Checksum"); len(got) != 2 || got[0] != "sha256=abc" || got[1] != "second" {
			t.Errorf("%s: X-Checksum trailer %q, all %v", path, got, resp.Trailer)
		}
		if got := resp.Trailer.Get("X-Late"); got != "unannounced" {
			t.Errorf("%s: X-Late trailer %q, all %v", path, got, resp.Trailer)
		}
	}
}

// The agent's writer sends trailers a handler sets itself: announced (but
// not those that cannot be trailers), or with http.TrailerPrefix, also when
// it wrote no body at all or a small one of known length, which would
// otherwise go out whole, without trailers. (Over HTTP/1.1 a response with
// a Content-Length cannot carry trailers, so the session is the client
// here, as it would be for an HTTP/2 front.)
func TestTrailersFromHandler(t *testing.T) {
	t.Parallel()
	features := append(append([]string{}, allFeatures...), wire.FeatureTrailers)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/empty": // nothing written: an implicit 200
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		case "/small": // held as small, then trailers after all
			w.Header().Set("Content-Length", "2")
			io.WriteString(w, "hi")
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"Content-Type", "text/html") // not a trailer
		case "/announced": // not held: it has trailers
			w.Header().Set("Trailer", "grpc-status, Content-Length, Grpc-Status")
			w.Header().Set("Content-Length", "2")
			w.WriteHeader(200)
			io.WriteString(w, "hi")
			w.Header().Set("Grpc-Status", "0")
			w.Header().Set("Content-Length", "3") // not a trailer
		}
	})
	client := &http.Client{Transport: tunnelSession(t, features, upstream)}
	// (A small response whose handler pauses past the hold time:
	// TestHoldTimerInBubble, on a fake clock.)
	for _, path := range []string{"/empty", "/small", "/announced"} {
		resp, err := client.Get("http://t.example" + path)
		if err != nil {
			t.Fatal(err)
		}
		announced := path == "/announced"
		if _, ok := resp.Trailer["Grpc-Status"]; ok != announced || len(resp.Trailer) > 1 {
			t.Errorf("%s: announced trailers %v", path, resp.Trailer)
		}
		if resp.Header.Get("Trailer") != "" || resp.Header.Get("Grpc-Status") != "" || resp.Header.Get(http.TrailerPrefix+"Grpc-Status") != "" ||
			resp.Header.Get("X-Late") != "" {
			t.Errorf("%s: trailers among the headers %v", path, resp.Header)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if want := map[string][]string{"Grpc-Status": {"0"}}; !reflect.DeepEqual(map[string][]string(resp.Trailer), want) {
			t.Errorf("%s: body %q, trailers %v, want %v", path, body, resp.Trailer, want)
		}
	}
}

func TestSlowReaderDoesNotStallOthers(t *testing.T) {
	t.Parallel()
	for name, features := range map[string][]string{"extensions": allFeatures, "v2": v2Features} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testSlowReaderDoesNotStallOthers(t, features)
		})
	}
}

func testSlowReaderDoesNotStallOthers(t *testing.T, features []string) {
	// With the window feature a stalled reader fills only its own stream.
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			chunk := make([]byte, 32<<10)
			for i := 0; i < 1000; i++ {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			return
		}
		io.WriteString(w, "small")
	})
	url := tunnelFront(t, features, upstream)
	resp, err := http.Get(url + "/big") // never read
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 20; i++ {
		r, err := http.Get(url + "/small")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if string(b) != "small" {
			t.Fatalf("got %q", b)
		}
	}
}

// benchWindow is the flow-control window of tunnelFront's sessions.
var benchWindow = DefaultWindowV1

// A small response of known length is held back to go out as one frame,
// but never for long: its headers still arrive before a slow body.
func TestSmallResponseHeadersStillFirst(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, features []string) {
		release := make(chan struct{})
		upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			<-release
			io.WriteString(w, "hello")
		})
		url := tunnelFront(t, features, upstream)
		// The body is released only once the headers are here: headers
		// held back for the body would never come.
		start := time.Now()
		got := make(chan *http.Response, 1)
		go func() {
			resp, err := http.Get(url)
			if err != nil {
				t.Error(err)
			}
			got <- resp
		}()
		var resp *http.Response
		select {
		case resp = <-got:
		case <-time.After(time.Minute):
			close(release)
			t.Fatal("no headers before the body, in a minute")
		}
		if resp == nil {
			close(release)
			return
		}
		defer resp.Body.Close()
		t.Logf("headers after %v", time.Since(start))
		close(release)
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "hello" || resp.ContentLength != 5 {
			t.Fatalf("body %q %v, length %d", b, err, resp.ContentLength)
		}
	})
}
