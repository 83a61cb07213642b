package inspect

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/api"
)

// The JSON API beside the page:
//
//	GET  /api/requests                  the kept requests, newest first (?method=, ?status=, ?path=)
//	GET  /api/requests/ID               one request, with its stream items
//	GET  /api/requests/ID/body?side=    the captured bytes of its request or response body
//	POST /api/requests/ID/replay        replays it (edits optional, see ReplayRequest)
//	GET  /api/requests.har              every kept request as a HAR 1.2 file
//	GET  /api/events                    SSE of new and updated requests (Topic; Last-Event-ID)
//
// Errors are the edge API's one shape, api.ErrorResponse:
// {"error": {"code", "status", "message"}}.

// Error codes of the inspector's API beside the shared ones of package api
// (api.CodeNotFound, api.CodeBadJSON).
const (
	CodeBadFilter        = "bad_filter"         // 400: a list filter that does not parse
	CodeBadSide          = "bad_side"           // 400: side is neither request nor response
	CodeBadReplay        = "bad_replay"         // 400: an edit that is not a valid method, path, header or body
	CodeMethodNotAllowed = "method_not_allowed" // 405
	CodeBodyCut          = "body_cut"           // 409: the request body was cut at the capture limit
	CodeTooLarge         = "too_large"          // 413: a replay's edits beyond their limits
	CodeTooManyReplays   = "too_many_replays"   // 429: maxReplays are running
	CodeNoUpstream       = "no_upstream"        // 503: the inspector has nothing to replay through
	CodeNotRecorded      = "not_recorded"       // 500: the replay ran but left no record
	CodeBadHost          = "bad_host"           // 403: a Host other than an IP address or localhost
	CodeCrossOrigin      = "cross_origin"       // 403: a replay asked by another site's page
)

// Body headers of GET /api/requests/ID/body: the body's full size, the
// bytes captured (the answer's body) and whether some were not.
const (
	HeaderBodySize      = "X-Sluice-Body-Size"
	HeaderBodyCaptured  = "X-Sluice-Body-Captured"
	HeaderBodyTruncated = "X-Sluice-Body-Truncated"
	// HeaderBodyEncoding is the body's recorded Content-Encoding (gzip,
	// br...): the captured bytes are as they passed, still encoded.
	HeaderBodyEncoding = "X-Sluice-Body-Encoding"
)

// apiServer serves the API of one Handler.
type apiServer struct {
	in       *Inspector
	upstream http.Handler
	version  string        // for the HAR's creator
	maxBody  int           // of an edited replay
	replays  chan struct{} // a slot per replay running: at most maxReplays
}

// routeAPI mounts the JSON API.
func (in *Inspector) routeAPI(mux *http.ServeMux, cfg HandlerConfig) {
	a := &apiServer{in: in, upstream: cfg.Upstream, version: cfg.Version, replays: make(chan struct{}, maxReplays)}
	if a.maxBody = cfg.MaxReplayBody; a.maxBody <= 0 {
		a.maxBody = DefaultMaxReplayBody
	}
	if a.version == "" {
		a.version = buildVersion()
	}
	// Patterns without a method, so that a wrong method gets the API's
	// JSON 405 rather than the mux's text one.
	mux.Handle("/api/requests", allow(http.MethodGet, a.list))
	mux.Handle("/api/requests.har", allow(http.MethodGet, a.har))
	mux.Handle("/api/requests/{id}", allow(http.MethodGet, a.get))
	mux.Handle("/api/requests/{id}/body", allow(http.MethodGet, a.body))
	mux.Handle("/api/requests/{id}/replay", allow(http.MethodPost, a.replay))
	mux.Handle("/api/events", allow(http.MethodGet, in.events()))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no API route %s %s", r.Method, r.URL.Path))
	})
}

// guard keeps the inspector, which shows captured headers (Authorization,
// Cookie) and replays requests with them, to the developer's own browser
// and tools: it answers only requests for an IP address or localhost
// (another name is what a DNS-rebinding page would send), and refuses
// cross-origin POSTs (another site's page asking for a replay: CSRF), by
// net/http's CrossOriginProtection (Sec-Fetch-Site, Origin).
func guard(h http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusForbidden, CodeCrossOrigin,
			fmt.Sprintf("%s %s from another site's page (Origin %q) is refused: the inspector acts only for its own page and for tools", r.Method, r.URL.Path, r.Header.Get("Origin")))
	}))
	h = cop.Handler(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !localName(r.Host) {
			apiError(w, http.StatusForbidden, CodeBadHost,
				fmt.Sprintf("the inspector answers requests for an IP address or localhost, not %q (a guard against DNS rebinding): open it at the address the agent printed", trimQuote(r.Host)))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// localName reports whether a Host is an IP address, localhost or a name
// under it (RFC 6761), with or without a port; or empty (HTTP/1.0).
func localName(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	return host == "" || host == "localhost" || strings.HasSuffix(host, ".localhost") || net.ParseIP(host) != nil
}

// allow lets h serve method only (GET also serves HEAD); other methods
// get a JSON 405 with Allow.
func allow(method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && (method != http.MethodGet || r.Method != http.MethodHead) {
			allowed := method
			if method == http.MethodGet {
				allowed += ", " + http.MethodHead
			}
			w.Header().Set("Allow", allowed)
			apiError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed,
				fmt.Sprintf("%s %s: only %s is allowed", r.Method, r.URL.Path, allowed))
			return
		}
		h(w, r)
	})
}

// apiError writes the API's one error shape (api.WriteError).
var apiError = api.WriteError

var writeJSON = api.WriteJSON

// list serves GET /api/requests: always an array, newest first.
func (a *apiServer) list(w http.ResponseWriter, r *http.Request) {
	match, err := parseFilter(r)
	if err != nil {
		apiError(w, http.StatusBadRequest, CodeBadFilter, err.Error())
		return
	}
	all := a.in.List()
	out := all[:0]
	for _, req := range all {
		if match(&req) {
			out = append(out, req)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// parseFilter reads the list's filters: method= (any case), status= (a
// code such as 404, or a class such as 4xx; 0 for no response yet) and
// path= (a substring, any case).
func parseFilter(r *http.Request) (func(*Request) bool, error) {
	q := r.URL.Query()
	method := q.Get("method")
	path := strings.ToLower(q.Get("path"))
	var status func(int) bool
	switch s := strings.ToLower(q.Get("status")); {
	case s == "":
	case len(s) == 3 && s[0] >= '1' && s[0] <= '5' && s[1:] == "xx":
		class := int(s[0]-'0') * 100
		status = func(c int) bool { return c >= class && c < class+100 }
	default:
		code, err := strconv.Atoi(s)
		if err != nil || code < 0 || code > 999 {
			return nil, fmt.Errorf("status=%q: want a status code such as 404, or a class such as 4xx", q.Get("status"))
		}
		status = func(c int) bool { return c == code }
	}
	return func(req *Request) bool {
		return (method == "" || strings.EqualFold(req.Method, method)) &&
			(status == nil || status(req.Status)) &&
			(path == "" || strings.Contains(strings.ToLower(req.Path), path))
	}, nil
}

// get serves GET /api/requests/ID.
func (a *apiServer) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	req, ok := a.in.Get(id)
	if !ok {
		a.notFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (a *apiServer) notFound(w http.ResponseWriter, id string) {
	apiError(w, http.StatusNotFound, api.CodeNotFound,
		fmt.Sprintf("no request %q: unknown, or no longer kept (the inspector keeps the last %d)", id, a.in.cfg.MaxRequests))
}

// body serves GET /api/requests/ID/body?side=request|response (default
// response): the captured bytes with the side's recorded Content-Type, and
// the Header* fields saying how much there was.
func (a *apiServer) body(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var request bool
	switch side := r.URL.Query().Get("side"); side {
	case "request":
		request = true
	case "response", "":
	default:
		apiError(w, http.StatusBadRequest, CodeBadSide, fmt.Sprintf("side=%q: want request or response", side))
		return
	}
	b, req, ok := a.in.Body(id, request)
	if !ok {
		a.notFound(w, id)
		return
	}
	h, size, cut := req.ResponseHeaders, req.ResponseBodySize, req.ResponseBodyTruncated
	if request {
		h, size, cut = req.RequestHeaders, req.RequestBodySize, req.RequestBodyTruncated
	}
	ct := h.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	out := w.Header()
	out.Set("Content-Type", ct)
	out.Set("Content-Length", strconv.Itoa(len(b)))
	out.Set("Cache-Control", "no-store")
	// The bytes are the visitor's or the local server's, shown on the
	// inspector's origin: never sniffed, never run.
	out.Set("X-Content-Type-Options", "nosniff")
	out.Set("Content-Security-Policy", "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'")
	out.Set(HeaderBodySize, strconv.FormatInt(size, 10))
	out.Set(HeaderBodyCaptured, strconv.Itoa(len(b)))
	out.Set(HeaderBodyTruncated, strconv.FormatBool(cut))
	if enc := h.Get("Content-Encoding"); enc != "" {
		out.Set(HeaderBodyEncoding, enc)
	}
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}
