package inspect

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestPageServed(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	srv := httptest.NewServer(in.Handler(HandlerConfig{}))
	defer srv.Close()

	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}

	resp, body := get("/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET / = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp != pageCSP || !strings.Contains(csp, "script-src 'self';") {
		t.Fatalf("CSP %q", csp)
	}
	if !strings.Contains(body, `data-masked="Authorization,Cookie,Set-Cookie,Proxy-Authorization"`) {
		t.Fatalf("page lacks the masked header names:\n%s", body)
	}
	if !strings.Contains(body, `data-body-limit="1048576"`) {
		t.Fatalf("page lacks the body limit:\n%s", body)
	}

	for path, ctype := range map[string]string{
		"/static/app.js":    "text/javascript; charset=utf-8",
		"/static/style.css": "text/css; charset=utf-8",
		"/static/icon.svg":  "image/svg+xml",
	} {
		resp, body := get(path)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ctype || body == "" {
			t.Errorf("GET %s = %d %q, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
	}
	for _, path := range []string{"/static/index.html", "/static/nope.js", "/static/", "/static/../page.go", "/nope"} {
		if resp, _ := get(path); resp.StatusCode != 404 {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
}

// TestPageSelfContained: the page loads nothing from elsewhere (the CSP
// would block it anyway) and its script puts data in the DOM as text only.
func TestPageSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(\s*['"]?(https?:|//)`)
	htmlSinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function`)
	err := fs.WalkDir(pageFiles, "page", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(pageFiles, path)
		if err != nil {
			return err
		}
		src := string(b)
		if path == "page/icon.svg" {
			src = strings.ReplaceAll(src, `xmlns="http://www.w3.org/2000/svg"`, "")
		}
		if m := external.FindString(src); m != "" {
			t.Errorf("%s refers to something outside the binary: %q", path, m)
		}
		if strings.HasSuffix(path, ".js") {
			if m := htmlSinks.FindString(src); m != "" {
				t.Errorf("%s uses %s: values go into the DOM as text", path, m)
			}
		}
		if strings.HasSuffix(path, ".html") && strings.Contains(src, "<script>") {
			t.Errorf("%s has an inline script: the CSP forbids it", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
