package inspect

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// The HAR 1.2 export, GET /api/requests.har: every kept request, oldest
// first, with the captured bodies (text as it is, other bytes in base64)
// and a comment where a body was cut. It loads in Chrome's DevTools
// (Network, Import HAR file). Custom fields start with "_", as HAR asks:
// _id (the request's inspector ID), _encoding (a binary request body's
// "base64": postData has no encoding field), _webSocketMessages (Chrome's
// own field for a WebSocket's messages).

// harTimeFormat is ISO 8601 with milliseconds and the zone, as HAR asks.
const harTimeFormat = "2006-01-02T15:04:05.000Z07:00"

type harLog struct {
	Version string     `json:"version"`
	Creator harCreator `json:"creator"`
	Entries []harEntry `json:"entries"`
	Comment string     `json:"comment,omitempty"`
}

type harCreator struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type harEntry struct {
	ID              string      `json:"_id"`
	StartedDateTime string      `json:"startedDateTime"`
	Time            float64     `json:"time"`
	Request         harRequest  `json:"request"`
	Response        harResponse `json:"response"`
	Cache           struct{}    `json:"cache"`
	Timings         harTimings  `json:"timings"`
	Comment         string      `json:"comment,omitempty"`
	WebSocket       []harWSMsg  `json:"_webSocketMessages,omitempty"`
}

type harRequest struct {
	Method      string       `json:"method"`
	URL         string       `json:"url"`
	HTTPVersion string       `json:"httpVersion"`
	Cookies     []harCookie  `json:"cookies"`
	Headers     []harNV      `json:"headers"`
	QueryString []harNV      `json:"queryString"`
	PostData    *harPostData `json:"postData,omitempty"`
	HeadersSize int          `json:"headersSize"`
	BodySize    int64        `json:"bodySize"`
}

type harResponse struct {
	Status      int         `json:"status"`
	StatusText  string      `json:"statusText"`
	HTTPVersion string      `json:"httpVersion"`
	Cookies     []harCookie `json:"cookies"`
	Headers     []harNV     `json:"headers"`
	Content     harContent  `json:"content"`
	RedirectURL string      `json:"redirectURL"`
	HeadersSize int         `json:"headersSize"`
	BodySize    int64       `json:"bodySize"`
	Comment     string      `json:"comment,omitempty"`
}

type harNV struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type harCookie struct {
	Name     string `json:"name"`
	Value    string `json:"value"`
	Path     string `json:"path,omitempty"`
	Domain   string `json:"domain,omitempty"`
	Expires  string `json:"expires,omitempty"`
	HTTPOnly bool   `json:"httpOnly,omitempty"`
	Secure   bool   `json:"secure,omitempty"`
}

type harPostData struct {
	MimeType string `json:"mimeType"`
	Text     string `json:"text"`
	Encoding string `json:"_encoding,omitempty"`
	Comment  string `json:"comment,omitempty"`
}

type harContent struct {
	Size     int64  `json:"size"`
	MimeType string `json:"mimeType"`
	Text     string `json:"text,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	Comment  string `json:"comment,omitempty"`
}

type harTimings struct {
	Send    float64 `json:"send"`
	Wait    float64 `json:"wait"`
	Receive float64 `json:"receive"`
}

// harWSMsg is an item of Chrome's _webSocketMessages.
type harWSMsg struct {
	Type   string  `json:"type"` // "send" (client to server) or "receive"
	Time   float64 `json:"time"` // seconds since the epoch
	Opcode int     `json:"opcode"`
	Data   string  `json:"data"`
}

// har serves GET /api/requests.har. Entries are encoded one at a time:
// the answer is never held whole (each entry holds at most its two
// captured bodies).
func (a *apiServer) har(w http.ResponseWriter, r *http.Request) {
	list := a.in.List()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Disposition", `attachment; filename="sluice.har"`)
	h.Set("Cache-Control", "no-store")
	head, _ := json.Marshal(harLog{Version: "1.2", Creator: harCreator{Name: "sluice", Version: a.version}})
	// head is {"version":...,"entries":null}: the entries go in its place.
	prefix, _ := strings.CutSuffix(string(head), `null}`)
	fmt.Fprintf(w, `{"log":%s[`, prefix)
	n := 0
	for i := len(list) - 1; i >= 0; i-- { // oldest first
		req, ok := a.in.Get(list[i].ID)
		if !ok {
			continue // gone since List
		}
		reqBody, _, _ := a.in.Body(req.ID, true)
		respBody, _, _ := a.in.Body(req.ID, false)
		b, err := json.Marshal(harEntryOf(&req, reqBody, respBody))
		if err != nil {
			continue
		}
		if n > 0 {
			w.Write([]byte(","))
		}
		w.Write(b)
		n++
	}
	w.Write([]byte("]}}\n"))
}

// harEntryOf makes a request's HAR entry.
func harEntryOf(req *Request, reqBody, respBody []byte) harEntry {
	e := harEntry{
		ID:              req.ID,
		StartedDateTime: req.Time.Format(harTimeFormat),
		Time:            max(req.DurationMS, 0),
		Request: harRequest{
			Method:      req.Method,
			URL:         harURL(req),
			HTTPVersion: req.Proto,
			Cookies:     harCookies((&http.Request{Header: req.RequestHeaders}).Cookies()),
			Headers:     harHeaders(req.RequestHeaders),
			QueryString: harQuery(req.Path),
			HeadersSize: -1,
			BodySize:    req.RequestBodySize,
		},
		Response: harResponse{
			Status:      req.Status,
			StatusText:  http.StatusText(req.Status),
			HTTPVersion: req.Proto,
			Cookies:     harCookies((&http.Response{Header: req.ResponseHeaders}).Cookies()),
			Headers:     harHeaders(req.ResponseHeaders),
			RedirectURL: req.ResponseHeaders.Get("Location"),
			HeadersSize: -1,
			BodySize:    req.ResponseBodySize,
			Content: harContent{
				Size:     req.ResponseBodySize,
				MimeType: req.ResponseHeaders.Get("Content-Type"),
			},
		},
	}
	// The wait is until the response headers; the rest is receiving.
	e.Timings.Wait = e.Time
	if req.Status != 0 {
		e.Timings.Wait = min(max(req.HeadersMS, 0), e.Time)
	}
	e.Timings.Receive = e.Time - e.Timings.Wait

	if req.RequestBodySize > 0 || len(reqBody) > 0 {
		pd := &harPostData{MimeType: req.RequestHeaders.Get("Content-Type")}
		pd.Text, pd.Encoding = harText(reqBody)
		pd.Comment = cutComment(req.RequestBodyTruncated, len(reqBody), req.RequestBodySize, pd.Encoding)
		e.Request.PostData = pd
	}
	c := &e.Response.Content
	if c.MimeType == "" {
		c.MimeType = "x-unknown" // as Chrome writes it
	}
	c.Text, c.Encoding = harText(respBody)
	c.Comment = cutComment(req.ResponseBodyTruncated, len(respBody), req.ResponseBodySize, c.Encoding)

	var notes []string
	if req.ReplayOf != "" {
		notes = append(notes, "a replay of request "+req.ReplayOf)
	}
	switch req.State {
	case StateFailed:
		notes = append(notes, "failed: "+req.Error)
	case StateWaiting, StateStreaming:
		notes = append(notes, "still "+req.State+" when exported")
	}
	if req.Stream != "" {
		s := fmt.Sprintf("a %s stream: %d items", req.Stream, req.ItemCount)
		if req.ItemsDropped > 0 {
			s += fmt.Sprintf(" (%d not kept)", req.ItemsDropped)
		}
		notes = append(notes, s)
	}
	if req.Status == 0 {
		e.Response.Comment = "no response"
	}
	e.Comment = strings.Join(notes, "; ")
	if req.Stream == StreamWebSocket {
		for _, it := range req.Items {
			e.WebSocket = append(e.WebSocket, harWSMessage(req.Time, it))
		}
	}
	return e
}

// harURL is the request's absolute URL: the scheme the visitor used
// (X-Forwarded-Proto, set by the edge) and the Host.
func harURL(req *Request) string {
	scheme := "http"
	if p := req.RequestHeaders.Get("X-Forwarded-Proto"); p == "https" {
		scheme = p
	}
	host := req.Host
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host + req.Path
}

// harHeaders lists h by name, each value an entry.
func harHeaders(h http.Header) []harNV {
	out := []harNV{}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range h[name] {
			out = append(out, harNV{Name: name, Value: v})
		}
	}
	return out
}

// harQuery lists the query's parameters, in their order, decoded.
func harQuery(target string) []harNV {
	out := []harNV{}
	_, raw, ok := strings.Cut(target, "?")
	if !ok {
		return out
	}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		out = append(out, harNV{Name: k, Value: v})
	}
	return out
}

func harCookies(cs []*http.Cookie) []harCookie {
	out := []harCookie{}
	for _, c := range cs {
		hc := harCookie{Name: c.Name, Value: c.Value, Path: c.Path, Domain: c.Domain, HTTPOnly: c.HttpOnly, Secure: c.Secure}
		if !c.Expires.IsZero() {
			hc.Expires = c.Expires.UTC().Format(harTimeFormat)
		}
		out = append(out, hc)
	}
	return out
}

// harText is a body as HAR text: as it is when it is UTF-8, else base64.
func harText(b []byte) (text, encoding string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

// cutComment says when a body's text is not the whole body.
func cutComment(cut bool, kept int, size int64, encoding string) string {
	var s []string
	if cut || int64(kept) < size {
		s = append(s, fmt.Sprintf("the body was cut at the inspector's capture limit: %d of %d bytes kept", kept, size))
	}
	if encoding == "base64" {
		s = append(s, "the text is the body's bytes in base64")
	}
	return strings.Join(s, "; ")
}

// harWSMessage is a WebSocket item as Chrome exports one.
func harWSMessage(start time.Time, it Item) harWSMsg {
	m := harWSMsg{Type: "receive", Data: it.Text}
	if it.Direction == "in" {
		m.Type = "send"
	}
	t := start.Add(time.Duration(it.TimeMS * float64(time.Millisecond)))
	m.Time = float64(t.UnixMicro()) / 1e6
	switch it.Opcode {
	case "text":
		m.Opcode = 1
	case "binary":
		m.Opcode = 2
	case "close":
		m.Opcode = 8
	case "ping":
		m.Opcode = 9
	case "pong":
		m.Opcode = 10
	}
	return m
}

// buildVersion is the module's version, for the HAR's creator when the
// Handler is given none.
func buildVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "dev"
}
