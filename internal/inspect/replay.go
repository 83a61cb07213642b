package inspect

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"sync"

	"golang.org/x/net/http/httpguts"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/tunnel"
)

// Limits of what a replay's caller sends.
const (
	// DefaultMaxReplayBody bounds an edited body (body or body_base64,
	// decoded) by default: HandlerConfig.MaxReplayBody.
	DefaultMaxReplayBody = 32 << 20
	// maxReplayHeaders and maxReplayHeaderBytes bound edited headers: the
	// number of values, and their bytes (net/http's default for a
	// request's head).
	maxReplayHeaders     = 256
	maxReplayHeaderBytes = http.DefaultMaxHeaderBytes
	// maxReplays bounds the replays running at once (a replayed stream
	// runs until it ends).
	maxReplays = 32
)

// ReplayRequest is the optional JSON body of POST /api/requests/ID/replay:
// edits of the recorded request. Fields left out keep the record's.
type ReplayRequest struct {
	Method string `json:"method,omitempty"`
	// Path is the path and query, starting with "/".
	Path string `json:"path,omitempty"`
	// Headers, when present, replace the recorded headers whole (Host
	// among them sets the Host).
	Headers http.Header `json:"headers,omitempty"`
	// Body (text) or BodyBase64 (bytes) replaces the recorded body; at
	// most one of them.
	Body       *string `json:"body,omitempty"`
	BodyBase64 *string `json:"body_base64,omitempty"`
}

// replay serves POST /api/requests/ID/replay: the recorded request (with
// the edits) goes again through the upstream, recorded by Wrap as a
// replay; the answer is the new request's object (201), once its
// response has ended — or, for a stream, once its headers have come: the
// replay then runs on, recorded, until it ends or the Inspector closes.
func (a *apiServer) replay(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if a.upstream == nil {
		apiError(w, http.StatusServiceUnavailable, CodeNoUpstream, "this inspector has no local server to replay to")
		return
	}
	select {
	case a.replays <- struct{}{}:
	default:
		apiError(w, http.StatusTooManyRequests, CodeTooManyReplays,
			fmt.Sprintf("%d replays are running already (replayed streams last until they end); try again later", maxReplays))
		return
	}
	started := false
	defer func() {
		if !started {
			<-a.replays
		}
	}()

	var ed ReplayRequest
	if status, code, err := decodeReplay(w, r, &ed, a.maxBody); err != nil {
		apiError(w, status, code, err.Error())
		return
	}
	body, orig, ok := a.in.Body(id, true)
	if !ok {
		a.notFound(w, id)
		return
	}
	req, err := buildReplay(orig, body, &ed, a.maxBody)
	if errors.Is(err, errBodyCut) {
		apiError(w, http.StatusConflict, CodeBodyCut, fmt.Sprintf(
			"request %s cannot be replayed as it was: its body was cut at the capture limit (%d of %d bytes kept); replay it with an edited body, or raise --inspect-body-limit",
			id, orig.RequestBodyCaptured, orig.RequestBodySize))
		return
	}
	if err != nil {
		apiError(w, http.StatusBadRequest, CodeBadReplay, err.Error())
		return
	}
	req.RemoteAddr = r.RemoteAddr

	rw := &replayWriter{header: make(http.Header), early: make(chan struct{})}
	done := make(chan struct{})
	var info *replayInfo
	h := a.in.Wrap(a.upstream)
	started = a.in.goBackground(func(ctx context.Context) {
		defer func() { <-a.replays }()
		defer close(done)
		// info is written here, before the closes of early and done
		// that the caller waits for.
		var rctx context.Context
		var unmark func()
		rctx, info, unmark = a.in.withReplay(ctx, id)
		defer unmark()
		h.ServeHTTP(rw, req.WithContext(rctx))
	})
	if !started {
		apiError(w, http.StatusServiceUnavailable, CodeNoUpstream, "the inspector is closing")
		return
	}
	select {
	case <-done:
	case <-rw.early:
	case <-r.Context().Done():
		return // the caller left; the replay goes on, recorded
	}
	if info.Entry == nil {
		apiError(w, http.StatusInternalServerError, CodeNotRecorded, "the request was replayed but the inspector did not record it")
		return
	}
	rec, ok := a.in.Get(info.Entry.ID())
	if !ok {
		apiError(w, http.StatusInternalServerError, CodeNotRecorded,
			fmt.Sprintf("the replay (request %s) is no longer kept", info.Entry.ID()))
		return
	}
	w.Header().Set("Location", "/api/requests/"+rec.ID)
	writeJSON(w, http.StatusCreated, rec)
}

// decodeReplay reads the optional edits (none for an empty body), whose
// edited body may have maxBody bytes.
func decodeReplay(w http.ResponseWriter, r *http.Request, ed *ReplayRequest, maxBody int) (status int, code string, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return 0, "", nil
	}
	// The JSON may hold the body in base64, and the headers.
	maxJSON := int64(maxBody)/3*4 + maxReplayHeaderBytes + 64<<10
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSON))
	dec.DisallowUnknownFields()
	err = dec.Decode(ed)
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return 0, "", nil // an empty body: no edits
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Errorf("the replay's edits are over %d bytes (an edited body may have %d)", maxJSON, maxBody)
	case err != nil:
		return http.StatusBadRequest, api.CodeBadJSON, fmt.Errorf("the replay's edits are not the JSON expected ({\"method\", \"path\", \"headers\": {name: [values]}, \"body\" or \"body_base64\"}): %v", err)
	}
	if dec.More() {
		return http.StatusBadRequest, api.CodeBadJSON, errors.New("the replay's edits are more than one JSON object")
	}
	return 0, "", nil
}

// errBodyCut: the recorded request body is not whole.
var errBodyCut = errors.New("inspect: the request body was cut at the capture limit")

// buildReplay makes the request to replay from a record, its captured
// body and the edits: the method, path and query, headers (Host among
// them) and body, less the hop-by-hop headers (one connection's, never
// forwarded), with a Content-Length that fits the body.
func buildReplay(orig Request, body []byte, ed *ReplayRequest, maxBody int) (*http.Request, error) {
	method, target := orig.Method, orig.Path
	if ed.Method != "" {
		if len(ed.Method) > 64 || !isToken(ed.Method) {
			return nil, fmt.Errorf("method %q is not an HTTP method", ed.Method)
		}
		method = ed.Method
	}
	if ed.Path != "" {
		target = ed.Path
	}
	if len(target) == 0 || target[0] != '/' || len(target) > 64<<10 || !printable(target) {
		return nil, fmt.Errorf("path %q: want a path and query starting with /, without spaces or control characters", trimQuote(target))
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, fmt.Errorf("path %q: %v", trimQuote(target), err)
	}

	h := orig.RequestHeaders.Clone()
	if ed.Headers != nil {
		if h, err = editedHeaders(ed.Headers); err != nil {
			return nil, err
		}
	}
	if h == nil {
		h = make(http.Header)
	}
	host := orig.Host
	if v := h.Get("Host"); v != "" {
		host = v
	}
	h.Del("Host")
	tunnel.RemoveHopByHop(h)

	switch {
	case ed.Body != nil && ed.BodyBase64 != nil:
		return nil, errors.New("give body or body_base64, not both")
	case ed.Body != nil:
		body = []byte(*ed.Body)
	case ed.BodyBase64 != nil:
		if body, err = base64.StdEncoding.DecodeString(*ed.BodyBase64); err != nil {
			return nil, fmt.Errorf("body_base64: %v", err)
		}
	case orig.RequestBodyTruncated || orig.RequestBodyCaptured < orig.RequestBodySize:
		return nil, errBodyCut
	}
	if (ed.Body != nil || ed.BodyBase64 != nil) && len(body) > maxBody {
		return nil, fmt.Errorf("the edited body has %d bytes; at most %d", len(body), maxBody)
	}
	if h.Get("Content-Length") != "" || len(body) > 0 {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}

	req := &http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Host:          host,
		RequestURI:    target,
		ContentLength: int64(len(body)),
		Body:          http.NoBody,
	}
	if major, minor, ok := http.ParseHTTPVersion(orig.Proto); ok {
		req.Proto, req.ProtoMajor, req.ProtoMinor = orig.Proto, major, minor
	}
	if len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	return req.WithContext(context.Background()), nil
}

// editedHeaders checks and canonicalizes a replay's headers.
func editedHeaders(in http.Header) (http.Header, error) {
	h := make(http.Header, len(in))
	n, size := 0, 0
	for name, vs := range in {
		if !httpguts.ValidHeaderFieldName(name) {
			return nil, fmt.Errorf("header name %q is not valid", trimQuote(name))
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("header %s: value %q is not valid", key, trimQuote(v))
			}
			n++
			size += len(key) + len(v) + 4
			h[key] = append(h[key], v)
		}
	}
	if n > maxReplayHeaders || size > maxReplayHeaderBytes {
		return nil, fmt.Errorf("the edited headers have %d values in %d bytes; at most %d values in %d bytes", n, size, maxReplayHeaders, maxReplayHeaderBytes)
	}
	return h, nil
}

func isToken(s string) bool {
	for _, c := range []byte(s) {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return s != ""
}

// printable reports whether s has no byte at or below space, nor DEL.
func printable(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// trimQuote cuts a value quoted in an error message.
func trimQuote(s string) string {
	if len(s) > 100 {
		return validPrefix(s, 100) + "..."
	}
	return s
}

// replayWriter is the ResponseWriter of a replay: the response goes to the
// record (Wrap's tee); the bytes themselves are counted and dropped.
// early is closed when the response headers say it is a stream (one the
// capture parses: streamKind) or an upgrade: the API answers then rather
// than when it ends.
type replayWriter struct {
	header http.Header
	early  chan struct{}

	mu    sync.Mutex
	wrote bool
	n     int64
}

func (w *replayWriter) Header() http.Header { return w.header }

func (w *replayWriter) WriteHeader(code int) {
	if code < 200 && code != http.StatusSwitchingProtocols {
		return // interim
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wrote {
		return
	}
	w.wrote = true
	if kind, _ := streamKind(w.header.Get("Content-Type")); code == http.StatusSwitchingProtocols || kind != "" {
		close(w.early)
	}
}

func (w *replayWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.mu.Lock()
	w.n += int64(len(p))
	w.mu.Unlock()
	return len(p), nil
}

// Flush makes http.NewResponseController's Flush succeed: nothing is
// buffered.
func (w *replayWriter) Flush() { w.WriteHeader(http.StatusOK) }
