package wire

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds the nesting of values the decoder skips.
const maxDepth = 64

// Decode parses one frame into f, which it resets first (keeping the
// capacity of f.Data and f.Body, so that a reused Frame decodes data frames
// without allocating). Unknown fields are ignored; a field given twice keeps
// its last value; null leaves a field empty. Anything that is not one JSON
// object is a *SyntaxError.
//
// Header and trailer names are canonicalized; values may be strings or
// arrays of strings.
func Decode(b []byte, f *Frame) error {
	f.Reset()
	d := decoder{b: b}
	if err := d.frame(f); err != nil {
		return err
	}
	d.ws()
	if d.i != len(d.b) {
		return d.errorf("data after the object")
	}
	return nil
}

type decoder struct {
	b         []byte
	i         int
	scratch   []byte
	unescaped bool // the last str result is in scratch
}

func (d *decoder) errorf(msg string) error { return &SyntaxError{Offset: d.i, Msg: msg} }

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// next skips whitespace and returns the next byte, or 0 at the end.
func (d *decoder) next() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *decoder) expect(c byte) error {
	if d.next() != c {
		return d.errorf("expected '" + string(c) + "'")
	}
	d.i++
	return nil
}

// null consumes a null literal if one is next.
func (d *decoder) null() bool {
	if d.next() == 'n' && bytes.HasPrefix(d.b[d.i:], []byte("null")) {
		d.i += 4
		return true
	}
	return false
}

// object calls field for each member of an object.
func (d *decoder) object(field func(key []byte) error) error {
	if err := d.expect('{'); err != nil {
		return err
	}
	if d.next() == '}' {
		d.i++
		return nil
	}
	for {
		key, err := d.str()
		if err != nil {
			return err
		}
		if d.unescaped {
			// key is in d.scratch, which the value may reuse.
			key = append([]byte(nil), key...)
		}
		if err := d.expect(':'); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		switch d.next() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.errorf("expected ',' or '}'")
		}
	}
}

func (d *decoder) frame(f *Frame) error {
	return d.object(func(key []byte) error {
		if d.null() {
			return nil
		}
		var err error
		switch string(key) {
		case "type":
			f.Type, err = d.string()
		case "tunnel_id":
			f.TunnelID, err = d.string()
		case "agent_token":
			f.AgentToken, err = d.string()
		case "features":
			f.Features, err = d.strings()
		case "public_url":
			f.PublicURL, err = d.string()
		case "window":
			f.Window, err = d.int(1 << 62)
		case "basic_auth_user":
			f.BasicAuthUser, err = d.string()
		case "basic_auth_bcrypt":
			f.BasicAuthBcrypt, err = d.string()
		case "allow_cidrs":
			f.AllowCIDRs, err = d.strings()
		case "tunnel_type":
			f.TunnelType, err = d.string()
		case "remote_port":
			var n int64
			n, err = d.int(1 << 31)
			f.RemotePort = int(n)
		case "message":
			f.Message, err = d.string()
		case "code":
			f.Code, err = d.stringOrNumber()
		case "request_id":
			f.RequestID, err = d.stringOrNumber()
		case "method":
			f.Method, err = d.string()
		case "path":
			f.Path, err = d.string()
		case "query":
			f.Query, err = d.query()
		case "headers":
			f.Headers, err = d.headers()
		case "status":
			var n int64
			n, err = d.int(1 << 31)
			f.Status = int(n)
		case "body_b64":
			f.Body, err = d.base64(f.Body[:0])
		case "data_b64":
			f.Data, err = d.base64(f.Data[:0])
		case "error":
			f.Error, err = d.string()
		case "trailers":
			f.Trailers, err = d.headers()
		case "bytes":
			f.Bytes, err = d.int(1 << 62)
		case "connection_id":
			f.ConnectionID, err = d.stringOrNumber()
		case "remote_addr":
			f.RemoteAddr, err = d.string()
		case "reason":
			f.Reason, err = d.string()
		default:
			err = d.skip(0)
		}
		return err
	})
}

// str returns the contents of a JSON string, unescaped. Without escapes it
// is a slice of the input; otherwise of d.scratch, valid until the next
// call. Invalid UTF-8 becomes U+FFFD, byte by byte, as encoding/json does.
func (d *decoder) str() ([]byte, error) {
	if d.next() != '"' {
		return nil, d.errorf("expected a string")
	}
	d.i++
	start := d.i
	d.unescaped = false
	escaped := false
	// Jump from quote to quote with IndexByte (memory speed on long base64
	// strings); a backslash before the quote means it may be escaped.
	for {
		q := bytes.IndexByte(d.b[d.i:], '"')
		if q < 0 {
			d.i = len(d.b)
			return nil, d.errorf("unterminated string")
		}
		end := d.i + q
		bs := bytes.IndexByte(d.b[d.i:end], '\\')
		if bs < 0 {
			s := d.b[start:end]
			d.i = end + 1
			switch plainness(s) {
			case hasControl:
				return nil, &SyntaxError{Offset: start, Msg: "control character in string"}
			case ascii:
				if !escaped {
					return s, nil
				}
			}
			return d.unescape(s)
		}
		escaped = true
		d.i += bs + 2 // the backslash and the byte it escapes
		if d.i > len(d.b) {
			return nil, d.errorf("unterminated string")
		}
	}
}

const (
	ascii = iota
	nonASCII
	hasControl
)

// plainness classifies the bytes of a string without escapes.
func plainness(s []byte) int {
	class := ascii
	for _, c := range s {
		if c < 0x20 {
			return hasControl
		}
		if c >= utf8.RuneSelf {
			class = nonASCII
		}
	}
	return class
}

func (d *decoder) unescape(s []byte) ([]byte, error) {
	out := d.scratch[:0]
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, s[i:i+size]...)
			}
			i += size
			continue
		}
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(s) {
			return nil, d.errorf("bad escape")
		}
		switch e := s[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(s[i+2:])
			if !ok {
				return nil, d.errorf("bad \\u escape")
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					r2, _ := hex4(s[i+2:])
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						out = utf8.AppendRune(out, dec)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			return nil, d.errorf("bad escape")
		}
		i += 2
	}
	d.scratch = out
	d.unescaped = true
	return out, nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func (d *decoder) string() (string, error) {
	s, err := d.str()
	return string(s), err
}

// number returns the text of a JSON number.
func (d *decoder) number() ([]byte, error) {
	d.ws()
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := func() int {
		n := 0
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	intStart := d.i
	if digits() == 0 {
		return nil, d.errorf("expected a number")
	}
	if d.b[intStart] == '0' && d.i-intStart > 1 {
		return nil, d.errorf("leading zero in number")
	}
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return nil, d.errorf("bad fraction")
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return nil, d.errorf("bad exponent")
		}
	}
	return d.b[start:d.i], nil
}

// int reads an integer in [0, max).
func (d *decoder) int(max int64) (int64, error) {
	at := d.i
	num, err := d.number()
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || n < 0 || n >= max {
		d.i = at
		return 0, d.errorf("expected a non-negative integer in range")
	}
	return n, nil
}

func (d *decoder) stringOrNumber() (string, error) {
	if d.next() == '"' {
		return d.string()
	}
	num, err := d.number()
	return string(num), err
}

func (d *decoder) strings() ([]string, error) {
	if err := d.expect('['); err != nil {
		return nil, err
	}
	out := []string{}
	if d.next() == ']' {
		d.i++
		return out, nil
	}
	for {
		s, err := d.string()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
		switch d.next() {
		case ',':
			d.i++
		case ']':
			d.i++
			return out, nil
		default:
			return nil, d.errorf("expected ',' or ']'")
		}
	}
}

// headers reads an object of names to strings or arrays of strings.
func (d *decoder) headers() (http.Header, error) {
	h := http.Header{}
	if d.emptyArray() {
		return h, nil // PHP's json_encode writes an empty map as []
	}
	err := d.object(func(key []byte) error {
		name := http.CanonicalHeaderKey(string(key))
		if d.null() {
			return nil
		}
		if d.next() == '[' {
			vs, err := d.strings()
			if len(vs) > 0 { // an empty array is no header at all
				h[name] = append(h[name], vs...)
			}
			return err
		}
		v, err := d.string()
		h[name] = append(h[name], v)
		return err
	})
	return h, err
}

// query reads a raw query string, or an object of names to strings or
// arrays (as PHP's $_GET arrives), encoded as a query.
func (d *decoder) query() (string, error) {
	if d.emptyArray() {
		return "", nil
	}
	if d.next() != '{' {
		return d.string()
	}
	h, err := d.headersRaw()
	return url.Values(h).Encode(), err
}

// headersRaw is headers without canonical names.
func (d *decoder) headersRaw() (map[string][]string, error) {
	m := map[string][]string{}
	err := d.object(func(key []byte) error {
		name := string(key)
		if d.null() {
			return nil
		}
		if d.next() == '[' {
			vs, err := d.strings()
			m[name] = append(m[name], vs...)
			return err
		}
		v, err := d.stringOrNumber()
		m[name] = append(m[name], v)
		return err
	})
	return m, err
}

// emptyArray consumes "[]" if it is next.
func (d *decoder) emptyArray() bool {
	if d.next() != '[' {
		return false
	}
	j := d.i + 1
	for j < len(d.b) && (d.b[j] == ' ' || d.b[j] == '\t' || d.b[j] == '\n' || d.b[j] == '\r') {
		j++
	}
	if j < len(d.b) && d.b[j] == ']' {
		d.i = j + 1
		return true
	}
	return false
}

// base64 decodes a base64 string (padded or not) and appends it to dst.
func (d *decoder) base64(dst []byte) ([]byte, error) {
	at := d.i
	var s []byte
	if d.next() == '"' {
		// Fast path: no escape. The base64 decoder rejects every byte
		// outside its alphabet except CR and LF, which JSON forbids raw.
		rest := d.b[d.i+1:]
		if q := bytes.IndexByte(rest, '"'); q >= 0 && bytes.IndexByte(rest[:q], '\\') < 0 &&
			bytes.IndexByte(rest[:q], '\n') < 0 && bytes.IndexByte(rest[:q], '\r') < 0 {
			s = rest[:q]
			d.i += q + 2
		}
	}
	if s == nil {
		var err error
		if s, err = d.str(); err != nil {
			return dst, err
		}
	}
	out, err := base64.StdEncoding.AppendDecode(dst, s)
	if err != nil && len(s)%4 != 0 {
		out, err = base64.RawStdEncoding.AppendDecode(dst, s)
	}
	if err != nil {
		d.i = at
		return dst, d.errorf("bad base64")
	}
	return out, nil
}

// skip skips one value of any kind.
func (d *decoder) skip(depth int) error {
	if depth > maxDepth {
		return d.errorf("nested too deep")
	}
	switch c := d.next(); {
	case c == '"':
		_, err := d.str()
		return err
	case c == '{':
		return d.object(func([]byte) error { return d.skip(depth + 1) })
	case c == '[':
		d.i++
		if d.next() == ']' {
			d.i++
			return nil
		}
		for {
			if err := d.skip(depth + 1); err != nil {
				return err
			}
			switch d.next() {
			case ',':
				d.i++
			case ']':
				d.i++
				return nil
			default:
				return d.errorf("expected ',' or ']'")
			}
		}
	case c == 't' && bytes.HasPrefix(d.b[d.i:], []byte("true")):
		d.i += 4
	case c == 'f' && bytes.HasPrefix(d.b[d.i:], []byte("false")):
		d.i += 5
	case c == 'n' && bytes.HasPrefix(d.b[d.i:], []byte("null")):
		d.i += 4
	default:
		_, err := d.number()
		return err
	}
	return nil
}
