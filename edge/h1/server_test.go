package h1_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Two requests on one connection: the first kept alive, the second
// closing it, so that the whole exchange ends and shows whether the first
// response left the connection usable.
const (
	getTwice  = "GET /a HTTP/1.1\r\nHost: t.example\r\n\r\nGET /b HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n\r\n"
	headTwice = "HEAD /a HTTP/1.1\r\nHost: t.example\r\n\r\nGET /b HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n\r\n"
)

// TestSameBytesAsNetHTTP serves each handler through h1 and through
// net/http's server alone and compares every byte they send (but the
// date): fields, their order, Content-Length or chunking, sniffed types,
// trailers, 1xx, keep-alive.
func TestSameBytesAsNetHTTP(t *testing.T) {
	big := strings.Repeat("x", 5000)
	cases := []struct {
		name string
		req  string
		h    http.HandlerFunc
	}{
		{"small", getTwice, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello "+r.URL.Path) }},
		{"empty", getTwice, func(w http.ResponseWriter, r *http.Request) {}},
		{"large", getTwice, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }},
		{"past the stage", getTwice, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, big[:1500])
			io.WriteString(w, big[:1500])
		}},
		{"stage exactly", getTwice, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big[:2048]) }},
		{"flushed", getTwice, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		}},
		{"flushed first", getTwice, func(w http.ResponseWriter, r *http.Request) {
			http.NewResponseController(w).Flush()
			io.WriteString(w, "event: x\n\n")
			http.NewResponseController(w).Flush()
		}},
		{"event stream", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			for i := range 3 {
				io.WriteString(w, "data: "+strings.Repeat("e", i)+"\n\n")
				w.(http.Flusher).Flush()
			}
		}},
		{"declared length", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}},
		{"declared large", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5000")
			io.WriteString(w, big)
		}},
		{"short of declared", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "hello")
		}},
		{"past declared", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			if _, err := io.WriteString(w, "hello"); err != http.ErrContentLength {
				panic("want ErrContentLength")
			}
		}},
		{"head", headTwice, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }},
		{"head large", headTwice, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }},
		{"head empty", headTwice, func(w http.ResponseWriter, r *http.Request) {}},
		{"no content", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNoContent)
			if _, err := io.WriteString(w, "abc"); err != http.ErrBodyNotAllowed {
				panic("want ErrBodyNotAllowed")
			}
		}},
		{"not modified", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "3")
			w.Header().Set("Etag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		}},
		{"sniffed html", getTwice, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html><body>hi") }},
		{"sniffed past the stage", getTwice, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "%PDF-")
			io.WriteString(w, big)
		}},
		{"encoded", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			io.WriteString(w, "<html>")
		}},
		{"identity", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Transfer-Encoding", "identity")
			w.(http.Flusher).Flush()
			io.WriteString(w, "x")
		}},
		{"chunked asked", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Transfer-Encoding", "chunked")
			io.WriteString(w, "x")
		}},
		{"length and chunked", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Transfer-Encoding", "chunked")
			w.Header().Set("Content-Length", "1")
			io.WriteString(w, "x")
		}},
		{"handler closes", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "x")
		}},
		{"handler keeps alive", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "keep-alive")
			io.WriteString(w, "x")
		}},
		{"client closes", "GET / HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n\r\n", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "x")
		}},
		{"trailers declared", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-T, x-second,Content-Length")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "body")
			w.Header().Set("X-T", "t")
			w.Header().Add("X-Second", "2a")
			w.Header().Add("X-Second", "2b")
		}},
		{"trailer prefix", getTwice, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set(http.TrailerPrefix+"X-U", "u")
		}},
		{"early hints", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.Header().Set("Content-Length", "9")
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusProcessing)
			w.Header().Del("Link")
			w.Header().Del("Content-Length")
			io.WriteString(w, "final")
		}},
		{"odd values", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header()["X-A"] = []string{"a\r\nb", "  c  ", "d\re"}
			w.Header()["Bad Name"] = []string{"v"}
			w.Header()["x-lower"] = []string{"kept as given"}
			io.WriteString(w, "x")
		}},
		{"unknown status", getTwice, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) }},
		{"superfluous", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, "x")
		}},
		{"header changed after WriteHeader", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.Header().Set("X-Late", "1")
			io.WriteString(w, "x")
		}},
		{"own date", getTwice, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Date", "Thu, 01 Jan 1970 00:00:00 GMT")
			io.WriteString(w, "x")
		}},
		{"many fields", getTwice, func(w http.ResponseWriter, r *http.Request) {
			for i := range 40 {
				w.Header().Add("X-F"+strings.Repeat("z", i%7), strings.Repeat("v", i))
			}
			io.WriteString(w, "x")
		}},
		{"post echo", "POST /e HTTP/1.1\r\nHost: t.example\r\nContent-Length: 11\r\n\r\nhello worldGET /b HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					panic(err)
				}
				w.Write(bytes.ToUpper(b))
			}},
		{"bare line feeds", "GET /a HTTP/1.1\nHost: t.example\n\nGET /b HTTP/1.1\nHost: t.example\nConnection: close\n\n",
			func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) }},
		{"request fields", "GET /p?q=1&r=%zz HTTP/1.1\r\nHost: T.Example:80\r\nX-Multi: 1\r\nx-multi: 2\r\nCookie: a=1\r\nConnection: close\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.Method+" "+r.RequestURI+" "+r.URL.RawQuery+" "+r.Host+" "+r.Proto+" "+strings.Join(r.Header["X-Multi"], ",")+" "+r.Header.Get("Cookie"))
				if r.Header.Get("Host") != "" || r.Close != true || r.ContentLength != 0 || r.Body == nil || r.RemoteAddr == "" {
					panic("request fields differ from net/http's")
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := serveBoth(t, tc.h, nil)
			want := canonical(exchange(t, s.std, tc.req))
			got := canonical(exchange(t, s.lean, tc.req))
			if strings.Contains(got, fallbackMark) {
				t.Fatalf("served by the fallback:\n%s", got)
			}
			if got != want {
				t.Errorf("h1 sent\n%s\nnet/http sent\n%s", got, want)
			}
		})
	}
}

// TestFallback: what h1 does not serve itself goes to net/http's server,
// on the same connection, from the request it refused on, and what net/http
// answers is what it answers alone.
func TestFallback(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "echo: "+r.Method+" "+r.URL.Path+" "+r.Proto+" "+string(b))
	})
	lean := func(r *http.Request) bool { return !strings.HasPrefix(r.URL.Path, "/other") }
	cases := []struct {
		name, req string
		lean      bool // the first request's answer comes from h1
	}{
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", false},
		{"chunked body", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
		{"expect", "POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", false},
		{"upgrade", "GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", false},
		{"bad field name", "GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n", false},
		{"bad field value", "GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", false},
		{"two hosts", "GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", false},
		{"no host", "GET / HTTP/1.1\r\n\r\n", false},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", false},
		{"bad length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 2\r\n\r\nab", false},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", false},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", false},
		{"large head", "GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\nConnection: close\r\n\r\n", false},
		{"not lean", "GET /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", false},
		{"lean, then not", "GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /other HTTP/1.0\r\n\r\n", true},
		{"lean, then a bad one", "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := serveBoth(t, echo, lean)
			want := exchange(t, s.std, tc.req)
			got := exchange(t, s.lean, tc.req)
			// Each answer of the handler through the fallback carries the
			// mark; net/http's own (400s) do not.
			first, _, _ := strings.Cut(got, "\r\n\r\n")
			if tc.lean && strings.Contains(first, fallbackMark) {
				t.Fatalf("first answer not h1's:\n%s", got)
			}
			marks := strings.Count(want, "echo:")
			if tc.lean {
				marks--
			}
			if n := strings.Count(got, fallbackMark); n != marks {
				t.Fatalf("%d answers by the fallback, want %d:\n%s", n, marks, got)
			}
			got = strings.ReplaceAll(got, fallbackMark+": net/http\r\n", "")
			if canonical(got) != canonical(want) {
				t.Errorf("h1 with its fallback sent\n%q\nnet/http sent\n%q", got, want)
			}
		})
	}
}
