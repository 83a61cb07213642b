package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sluicehq/sluice/api"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"http://127.0.0.1:3000", "https://tunnel.example.com/", "HTTP://x.localhost:8080/base"} {
		if u, err := api.ParseURL(s); err != nil || u.Host == "" {
			t.Errorf("ParseURL(%q) = %v, %v", s, u, err)
		}
	}
	for _, s := range []string{"", "127.0.0.1:3000", "ftp://x", "http://", "https:///path", "ws://x", "h2c://x", "://x", "http://[::1"} {
		u, err := api.ParseURL(s)
		var ue *api.URLError
		if u != nil || !errors.As(err, &ue) || ue.URL != s {
			t.Errorf("ParseURL(%q) = %v, %v; want a *URLError", s, u, err)
			continue
		}
		if want := `"` + s + `" is not an http:// or https:// URL`; s != "http://[::1" && err.Error() != want {
			t.Errorf("ParseURL(%q): %q, want %q", s, err, want)
		}
	}
}

func TestParseUpstream(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"http://127.0.0.1:3000", "https://localhost:8443/", "h2c://127.0.0.1:50051", "H2C://[::1]:50051"} {
		if u, err := api.ParseUpstream(s); err != nil || u.Host == "" {
			t.Errorf("ParseUpstream(%q) = %v, %v", s, u, err)
		}
	}
	for _, s := range []string{"", "127.0.0.1:3000", "ftp://x", "h2c://", "h2://x", "grpc://x", "ws://x"} {
		u, err := api.ParseUpstream(s)
		var ue *api.URLError
		if u != nil || !errors.As(err, &ue) || ue.URL != s {
			t.Errorf("ParseUpstream(%q) = %v, %v; want a *URLError", s, u, err)
			continue
		}
		if want := `"` + s + `" is not an http://, https:// or h2c:// URL`; err.Error() != want {
			t.Errorf("ParseUpstream(%q): %q, want %q", s, err, want)
		}
	}
}

// ParseAddrUpstream takes TYPE://HOST:PORT of its type only.
func TestParseAddrUpstream(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ typ, s, want string }{
		{"tcp", "tcp://127.0.0.1:5432", "127.0.0.1:5432"},
		{"tcp", "tcp://db.internal:5432/", "db.internal:5432"},
		{"udp", "udp://127.0.0.1:53", "127.0.0.1:53"},
		{"udp", "udp://[::1]:53", "[::1]:53"},
	} {
		if got, err := api.ParseAddrUpstream(c.typ, c.s); err != nil || got != c.want {
			t.Errorf("ParseAddrUpstream(%q, %q) = %q, %v; want %q", c.typ, c.s, got, err, c.want)
		}
	}
	for _, c := range []struct{ typ, s string }{
		{"tcp", "udp://127.0.0.1:53"}, {"udp", "tcp://127.0.0.1:5432"}, {"udp", "udp://127.0.0.1"}, {"udp", "udp://:53"},
		{"udp", "udp://127.0.0.1:0"}, {"udp", "udp://127.0.0.1:53/x"}, {"udp", "udp://u@127.0.0.1:53"}, {"tcp", "127.0.0.1:5432"},
	} {
		got, err := api.ParseAddrUpstream(c.typ, c.s)
		var ue *api.URLError
		if got != "" || !errors.As(err, &ue) || ue.URL != c.s {
			t.Errorf("ParseAddrUpstream(%q, %q) = %q, %v; want a *URLError", c.typ, c.s, got, err)
			continue
		}
		if want := `"` + c.s + `" is not a ` + c.typ + `://HOST:PORT URL`; err.Error() != want {
			t.Errorf("ParseAddrUpstream(%q, %q): %q, want %q", c.typ, c.s, err, want)
		}
	}
}

func TestNewClient(t *testing.T) {
	t.Parallel()
	var ue *api.URLError
	if _, err := api.NewClient("localhost:8080", "T", nil); !errors.As(err, &ue) {
		t.Errorf("no scheme: %v", err)
	}
	if _, err := api.NewClient("http://localhost:8080", "", nil); !errors.Is(err, api.ErrNoToken) {
		t.Errorf("no token: %v", err)
	}
	if _, err := api.NewClient("http://localhost:8080", "T", nil); err != nil {
		t.Errorf("good: %v", err)
	}
}

// What the client sends, and the errors it makes of answers that are not
// successes, the API's envelope or not.
func TestClientAnswers(t *testing.T) {
	t.Parallel()
	var got *http.Request
	var gotBody string
	answer := func(w http.ResponseWriter) {}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got, gotBody = r, string(b)
		answer(w)
	}))
	defer srv.Close()
	c, err := api.NewClient(srv.URL+"/", "S3CRET", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	answer = func(w http.ResponseWriter) {
		w.WriteHeader(201)
		io.WriteString(w, `{"tunnel":{"name":"web","upstream":"http://127.0.0.1:1","enabled":true,"version":1}}`)
	}
	on := false
	tun, err := c.UpdateTunnel(ctx, "a b", api.TunnelRequest{Enabled: &on, AllowCIDRs: &[]string{}})
	if err != nil || tun.Name != "web" || !tun.Enabled {
		t.Fatalf("UpdateTunnel: %+v %v", tun, err)
	}
	if got.Method != "PATCH" || got.URL.EscapedPath() != "/api/tunnels/a%20b" || got.Header.Get("Authorization") != "Bearer S3CRET" ||
		got.Header.Get("Content-Type") != "application/json" || gotBody != `{"allow_cidrs":[],"enabled":false}` {
		t.Fatalf("sent %s %s %v %q", got.Method, got.URL, got.Header, gotBody)
	}

	answer = func(w http.ResponseWriter) {
		w.WriteHeader(409)
		io.WriteString(w, `{"error":{"code":"exists","status":409,"message":"tunnel web already exists"}}`)
	}
	_, err = c.CreateTunnel(ctx, api.TunnelRequest{})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeExists || ae.Status != 409 || err.Error() != "tunnel web already exists (HTTP 409, exists)" {
		t.Fatalf("envelope: %v", err)
	}

	answer = func(w http.ResponseWriter) {
		w.WriteHeader(502)
		io.WriteString(w, "<h1>bad gateway</h1>\n")
	}
	_, err = c.ListTokens(ctx)
	if !errors.As(err, &ae) || ae.Code != "" || ae.Status != 502 || err.Error() != "GET /api/tokens: HTTP 502 Bad Gateway: <h1>bad gateway</h1>" {
		t.Fatalf("not an envelope: %v", err)
	}

	answer = func(w http.ResponseWriter) { io.WriteString(w, `{"tokens": 3}`) }
	if _, err = c.ListTokens(ctx); err == nil || errors.As(err, &ae) {
		t.Fatalf("a success that is not the JSON expected: %v", err)
	}

	req, err := c.NewPushRequest(ctx, srv.URL+"/push")
	if err != nil || req.Header.Get("Authorization") != "Bearer S3CRET" || req.Header.Get("Accept") != "text/event-stream" || req.URL.String() != srv.URL+"/push" {
		t.Fatalf("NewPushRequest: %v %v", req, err)
	}
	if _, err := c.NewPushRequest(ctx, "ftp://x"); err == nil {
		t.Fatal("NewPushRequest with an ftp URL")
	}
}
