package muxcompare

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/yamux"
	"github.com/xtaci/smux"
	"golang.org/x/net/http2"
)

// countingConn counts the WebSocket messages written (each Write or
// WriteBuffers is one message) and their bytes.
type countingConn struct {
	wsConn
	msgs, bytes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.msgs.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.wsConn.Write(p)
}

func (c *countingConn) WriteBuffers(v [][]byte) (int, error) {
	c.msgs.Add(1)
	for _, b := range v {
		c.bytes.Add(int64(len(b)))
	}
	return c.wsConn.WriteBuffers(v)
}

func (c *countingConn) take() string {
	m, b := c.msgs.Swap(0), c.bytes.Swap(0)
	return fmt.Sprintf("%d messages, %d B average", m, b/max(m, 1))
}

// TestMessageCounts logs how many WebSocket messages a 16 MiB upload and
// download take with yamux (with and without yamuxCoalesce), smux and
// HTTP/2 (default settings):
//
//	go test -run TestMessageCounts -v
func TestMessageCounts(t *testing.T) {
	const size = 16 << 20
	for _, name := range []string{"yamux", "yamux-coalesce", "smux", "h2"} {
		edgeWS, agentWS, closeWS := wsPair(t)
		ec, ac := &countingConn{wsConn: edgeWS}, &countingConn{wsConn: agentWS}
		var open func() (net.Conn, error)
		var ln net.Listener
		var rt http.RoundTripper
		agent := &http.Server{Handler: upstream(), ErrorLog: quietLog}
		switch name {
		case "yamux", "yamux-coalesce":
			cfg := yamux.DefaultConfig()
			cfg.LogOutput = io.Discard
			var e, a io.ReadWriteCloser = ec, ac
			if name == "yamux-coalesce" {
				e, a = &yamuxCoalesce{wsConn: ec}, &yamuxCoalesce{wsConn: ac}
			}
			es, _ := yamux.Client(e, cfg)
			as, _ := yamux.Server(a, cfg)
			open, ln = es.Open, as
		case "smux":
			cfg := smux.DefaultConfig()
			cfg.Version = 2
			es, _ := smux.Client(ec, cfg)
			as, _ := smux.Server(ac, cfg)
			open, ln = func() (net.Conn, error) { return es.OpenStream() }, smuxListener{as}
		case "h2":
			go (&http2.Server{}).ServeConn(ac, &http2.ServeConnOpts{Handler: agent.Handler})
			cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(ec)
			if err != nil {
				t.Fatal(err)
			}
			rt = cc
		}
		tr := &http.Transport{}
		if ln != nil {
			go agent.Serve(ln)
			tr = streamTransport(open)
			rt = tr
		}
		pub := httptest.NewServer(&httputil.ReverseProxy{
			Rewrite:       func(pr *httputil.ProxyRequest) { pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "agent" },
			Transport:     rt,
			FlushInterval: -1,
		})
		e := &env{url: pub.URL, client: &http.Client{Transport: &http.Transport{}}}
		if err := e.upload(size); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s upload 16 MiB: edge wrote %s; agent wrote %s", name, ec.take(), ac.take())
		if err := e.download(size); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s download 16 MiB: edge wrote %s; agent wrote %s", name, ec.take(), ac.take())
		e.client.CloseIdleConnections()
		pub.Close()
		tr.CloseIdleConnections()
		agent.Close()
		closeWS()
	}
}
