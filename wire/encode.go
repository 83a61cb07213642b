package wire

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// EncodeOptions says what the peer understands.
type EncodeOptions struct {
	// MultiValueHeaders sends header and trailer values as arrays (the peer announced
	// multi_value_headers). Without it each header is one string: values
	// joined with ", " ("; " for Cookie), and only the first Set-Cookie,
	// since cookies cannot be joined.
	MultiValueHeaders bool
}

// AppendFrame appends f as a JSON object to dst. Fields are written when
// they are set, and always when the type requires them (status and headers
// of responses, the body or data of body-carrying frames).
func AppendFrame(dst []byte, f *Frame, opt EncodeOptions) []byte {
	// The data frames first: the hot path, a fixed shape.
	switch f.Type {
	case TypeHTTPRequestChunk, TypeHTTPResponseChunk:
		dst = append(dst, `{"type":"`...)
		dst = append(dst, f.Type...)
		dst = append(dst, `","request_id":`...)
		dst = appendString(dst, f.RequestID)
		dst = append(dst, `,"data_b64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, f.Data)
		return append(dst, `"}`...)
	}
	w := objectWriter{dst: append(dst, '{')}
	w.str("type", f.Type)
	w.strIf("tunnel_id", f.TunnelID)
	w.strIf("agent_token", f.AgentToken)
	if f.Features != nil {
		w.strings("features", f.Features)
	}
	w.strIf("public_url", f.PublicURL)
	if f.Window != 0 {
		w.key("window")
		w.dst = strconv.AppendInt(w.dst, f.Window, 10)
	}
	w.strIf("basic_auth_user", f.BasicAuthUser)
	w.strIf("basic_auth_bcrypt", f.BasicAuthBcrypt)
	if f.AllowCIDRs != nil {
		w.strings("allow_cidrs", f.AllowCIDRs)
	}
	w.strIf("tunnel_type", f.TunnelType)
	if f.RemotePort != 0 {
		w.key("remote_port")
		w.dst = strconv.AppendInt(w.dst, int64(f.RemotePort), 10)
	}
	w.strIf("message", f.Message)
	w.strIf("code", f.Code)
	w.strIf("request_id", f.RequestID)
	w.strIf("connection_id", f.ConnectionID)
	isRequest := f.Type == TypeHTTPRequest || f.Type == TypeHTTPRequestStart
	isResponse := f.Type == TypeHTTPResponse || f.Type == TypeHTTPResponseStart || f.Type == TypeHTTPResponseInfo
	if isRequest {
		w.str("method", f.Method)
		w.str("path", f.Path)
		w.str("query", f.Query)
	} else {
		w.strIf("method", f.Method)
		w.strIf("path", f.Path)
		w.strIf("query", f.Query)
	}
	if isResponse || f.Status != 0 {
		w.key("status")
		w.dst = strconv.AppendInt(w.dst, int64(f.Status), 10)
	}
	if isRequest || isResponse || f.Headers != nil {
		w.key("headers")
		w.dst = appendHeaders(w.dst, f.Headers, opt.MultiValueHeaders)
	}
	if f.Type == TypeHTTPRequest || f.Type == TypeHTTPResponse || len(f.Body) > 0 {
		w.key("body_b64")
		w.dst = append(w.dst, '"')
		w.dst = base64.StdEncoding.AppendEncode(w.dst, f.Body)
		w.dst = append(w.dst, '"')
	}
	if f.Type == TypeTCPData || f.Type == TypeUDPData || len(f.Data) > 0 {
		w.key("data_b64")
		w.dst = append(w.dst, '"')
		w.dst = base64.StdEncoding.AppendEncode(w.dst, f.Data)
		w.dst = append(w.dst, '"')
	}
	w.strIf("error", f.Error)
	if f.Trailers != nil {
		w.key("trailers")
		w.dst = appendHeaders(w.dst, f.Trailers, opt.MultiValueHeaders)
	}
	if f.Type == TypeWindowUpdate || f.Bytes != 0 {
		w.key("bytes")
		w.dst = strconv.AppendInt(w.dst, f.Bytes, 10)
	}
	w.strIf("remote_addr", f.RemoteAddr)
	w.strIf("reason", f.Reason)
	return append(w.dst, '}')
}

type objectWriter struct {
	dst   []byte
	comma bool
}

func (w *objectWriter) key(k string) {
	if w.comma {
		w.dst = append(w.dst, ',')
	}
	w.comma = true
	w.dst = append(w.dst, '"')
	w.dst = append(w.dst, k...)
	w.dst = append(w.dst, '"', ':')
}

func (w *objectWriter) str(k, v string) {
	w.key(k)
	w.dst = appendString(w.dst, v)
}

func (w *objectWriter) strings(k string, vs []string) {
	w.key(k)
	w.dst = append(w.dst, '[')
	for i, s := range vs {
		if i > 0 {
			w.dst = append(w.dst, ',')
		}
		w.dst = appendString(w.dst, s)
	}
	w.dst = append(w.dst, ']')
}

func (w *objectWriter) strIf(k, v string) {
	if v != "" {
		w.str(k, v)
	}
}

// appendHeaders writes h as an object with names in sorted order.
func appendHeaders(dst []byte, h http.Header, multi bool) []byte {
	names := make([]string, 0, len(h))
	for name, vs := range h {
		if len(vs) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	dst = append(dst, '{')
	for i, name := range names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, name)
		dst = append(dst, ':')
		vs := h[name]
		switch {
		case multi:
			dst = append(dst, '[')
			for j, v := range vs {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = appendString(dst, v)
			}
			dst = append(dst, ']')
		case len(vs) == 1 || strings.EqualFold(name, "Set-Cookie"):
			dst = appendString(dst, vs[0])
		case strings.EqualFold(name, "Cookie"):
			dst = appendString(dst, strings.Join(vs, "; "))
		default:
			dst = appendString(dst, strings.Join(vs, ", "))
		}
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
