package wire

import (
	"encoding/json"
	"net/http"
	"testing"
	"unicode/utf8"
)

// FuzzDecode: the decoder never panics, accepts only valid JSON, and what it
// decodes survives an encode/decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		`{"type":"register","tunnel_id":"demo","agent_token":"T"}`,
		`{"type":"register","tunnel_id":"demo","agent_token":"T","features":["access"],"basic_auth_user":"ann","basic_auth_bcrypt":"$2a$10$x","allow_cidrs":["10.0.0.0/8","::1/128"]}`,
		`{"type":"register","allow_cidrs":[],"basic_auth_user":null,"allow_cidrs":["a",1]}`,
		`{"type":"http_response","request_id":"r1","status":200,"headers":{"content-type":"text\/html"},"body_b64":"aGk\/"}`,
		`{"type":"http_response_start","request_id":"7","status":200,"headers":{"Set-Cookie":["a=1","b=2"]}}`,
		`{"type":"http_response_chunk","request_id":42,"data_b64":"AAEC"}`,
		`{"type":"http_request","request_id":"1","method":"GET","path":"/","query":{"a":"1","b":["2"]},"headers":{},"body_b64":""}`,
		`{"type":"error","message":"caf\u00e9 \ud83d\ude00 \ud800","code":409}`,
		`{"x":[1,-2.5e3,true,false,null,{"y":"z"}]}`,
		`{"type":"window_update","request_id":"r","bytes":65536}`,
		`{"type":"registered","tunnel_id":"demo","features":["window","initial_window"],"window":32768}`,
		`{"type":"registered","window":0,"window":null,"window":4611686018427387903}`,
		`{"type":"http_response_end","request_id":"9","trailers":{"x-checksum":"abc","Grpc-Status":["0","1"]}}`,
		`{"type":"http_response_end","request_id":"9","trailers":[]}`,
		`{"type":"register","tunnel_id":"db","agent_token":"T","features":["window","tcp_half_close"],"tunnel_type":"tcp","remote_port":5432}`,
		`{"type":"tcp_connect","connection_id":"c1","remote_addr":"203.0.113.7:51234"}`,
		`{"type":"tcp_data","connection_id":17,"data_b64":"AAEC"}`,
		`{"type":"tcp_close","connection_id":"c1","reason":"eof"}`,
		`{"type":"window_update","connection_id":"c1","bytes":4096}`,
		`{"type":"a" "b":1}`, `{"status":01}`, `{`, ``,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var fr Frame
		if err := Decode(in, &fr); err != nil {
			return
		}
		if !json.Valid(in) {
			t.Fatalf("accepted invalid JSON %q", in)
		}
		enc := AppendFrame(nil, &fr, EncodeOptions{MultiValueHeaders: true})
		if !json.Valid(enc) {
			t.Fatalf("encoded invalid JSON %q from %q", enc, in)
		}
		var again Frame
		if err := Decode(enc, &again); err != nil {
			t.Fatalf("re-decode of %q: %v", enc, err)
		}
		if !framesEqual(&fr, &again) {
			t.Fatalf("round trip changed the frame:\n%+v\n%+v", fr, again)
		}
	})
}

// FuzzRoundTrip: any frame built from arbitrary strings and bytes encodes
// to valid JSON and decodes back to itself (invalid UTF-8 in strings
// becoming U+FFFD, as with encoding/json). The header name and value also
// make a trailer (named by the value, so that arbitrary names are tried in
// both members); the arguments stay as they were so that the stored corpus
// still loads.
func FuzzRoundTrip(f *testing.F) {
	f.Add("http_request_start", "r1", "GET", "/p", "a=1", "X-Key", "v\x00\n\"", []byte{0, 1, 255}, 200, int64(0))
	f.Add("http_response_chunk", "42", "", "", "", "", "", []byte("hello"), 0, int64(0))
	f.Add("window_update", "r", "", "", "", "", "", []byte(nil), 0, int64(1<<20))
	f.Add("x\xff", "\xc3", "M", "/\u2028", "", "Set-Cookie", "a=1", []byte{}, 999, int64(5))
	f.Add("http_response_end", "7", "", "", "", "X-Checksum", "grpc-status", []byte(nil), 0, int64(0))
	f.Add("registered", "", "", "", "", "", "", []byte(nil), 0, int64(32<<10))
	f.Fuzz(func(t *testing.T, typ, id, method, path, query, hname, hval string, data []byte, status int, n int64) {
		if status < 0 || status >= 1<<31 || n < 0 || n >= 1<<62 {
			return
		}
		fr := Frame{Type: typ, RequestID: id, Method: method, Path: path, Query: query,
			Status: status, Data: data, Body: data, Bytes: n, Window: n, Error: hval}
		if hname != "" {
			fr.Headers = http.Header{hname: {hval, hval + "2"}}
			fr.Trailers = http.Header{hval: {hname, query}}
		}
		enc := AppendFrame(nil, &fr, EncodeOptions{MultiValueHeaders: true})
		if !json.Valid(enc) {
			t.Fatalf("invalid JSON %q", enc)
		}
		var got Frame
		if err := Decode(enc, &got); err != nil {
			t.Fatalf("decode %q: %v", enc, err)
		}
		want := fr
		want.Type, want.RequestID, want.Method, want.Path, want.Query, want.Error =
			valid(typ), valid(id), valid(method), valid(path), valid(query), valid(hval)
		if hname != "" {
			want.Headers = http.Header{http.CanonicalHeaderKey(valid(hname)): {valid(hval), valid(hval + "2")}}
			want.Trailers = http.Header{http.CanonicalHeaderKey(valid(hval)): {valid(hname), valid(query)}}
		}
		chunk := fr.Type == TypeHTTPRequestChunk || fr.Type == TypeHTTPResponseChunk
		if chunk { // the data frames carry only their own fields
			want = Frame{Type: fr.Type, RequestID: valid(id), Data: data}
		}
		if got.Headers == nil || len(got.Headers) == 0 {
			got.Headers, want.Headers = nil, nil
		}
		if got.Path == "" {
			want.Path = got.Path
		}
		if !framesEqual(&got, &want) {
			t.Fatalf("encoded %q\ngot  %+v\nwant %+v", enc, got, want)
		}
	})
}

// valid replaces each invalid UTF-8 byte with U+FFFD, as encoding/json does.
func valid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var out []rune
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		out = append(out, r)
		i += size
	}
	return string(out)
}
