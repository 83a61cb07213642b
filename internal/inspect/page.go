package inspect

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// The page is plain HTML, CSS and JavaScript compiled into the binary: no
// build step, nothing loaded from elsewhere. page/index.html is a template
// (the shell, with what the script needs to know in data- attributes);
// the rest is served as it is under /static/.
//
//go:embed page
var pageFiles embed.FS

var pageTemplate = template.Must(template.ParseFS(pageFiles, "page/index.html"))

// pageCSP is the page's Content-Security-Policy: its own script, styles,
// images (the bodies it shows) and API, nothing else; no inline script, no
// framing, no form posts.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self'; connect-src 'self'; base-uri 'none'; " +
	"form-action 'none'; frame-ancestors 'none'"

// pageData is what index.html is rendered with.
type pageData struct {
	Masked    string // inspect.Masked, comma-separated
	BodyLimit int64
}

// routePage mounts the page: GET / and its files under /static/.
func (in *Inspector) routePage(mux *http.ServeMux) {
	var index bytes.Buffer
	err := pageTemplate.Execute(&index, pageData{
		Masked:    strings.Join(Masked, ","),
		BodyLimit: in.cfg.BodyLimit,
	})
	if err != nil {
		panic("inspect: page template: " + err.Error()) // a bug in the embedded template
	}
	html := index.Bytes()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w, "text/html; charset=utf-8")
		_, _ = w.Write(html)
	})
	static, _ := fs.Sub(pageFiles, "page")
	mux.HandleFunc("GET /static/{file}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if name == "index.html" {
			http.NotFound(w, r)
			return
		}
		b, err := fs.ReadFile(static, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		ctype, ok := staticTypes[path.Ext(name)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		pageHeaders(w, ctype)
		_, _ = w.Write(b)
	})
}

// staticTypes are the content types of the page's files, by extension
// (not the system's MIME table: the same everywhere).
var staticTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
}

// pageHeaders sets the headers of the page and its files.
func pageHeaders(w http.ResponseWriter, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}
