package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeJettyFrames(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   string
		want Frame
	}{
		{"register, plain agent",
			`{"type":"register","tunnel_id":"demo","agent_token":"T"}`,
			Frame{Type: "register", TunnelID: "demo", AgentToken: "T"}},
		{"register with features",
			`{"type":"register","tunnel_id":"demo","agent_token":"T","features":["request_stream","window"]}`,
			Frame{Type: "register", TunnelID: "demo", AgentToken: "T", Features: []string{"request_stream", "window"}}},
		{"registered with an initial window",
			`{"type":"registered","tunnel_id":"demo","public_url":"http://demo.localhost:8080","features":["window","initial_window"],"window":32768}`,
			Frame{Type: "registered", TunnelID: "demo", PublicURL: "http://demo.localhost:8080", Features: []string{"window", "initial_window"}, Window: 32768}},
		{"register with visitor rules",
			`{"type":"register","tunnel_id":"demo","agent_token":"T","features":["access"],"basic_auth_user":"ann","basic_auth_bcrypt":"$2a$10$abc\/","allow_cidrs":["10.0.0.0/8","::1/128"]}`,
			Frame{Type: "register", TunnelID: "demo", AgentToken: "T", Features: []string{"access"},
				BasicAuthUser: "ann", BasicAuthBcrypt: "$2a$10$abc/", AllowCIDRs: []string{"10.0.0.0/8", "::1/128"}}},
		{"register of a TCP tunnel",
			`{"type":"register","tunnel_id":"db","agent_token":"T","features":["window","tcp_half_close"],"tunnel_type":"tcp","remote_port":5432}`,
			Frame{Type: "register", TunnelID: "db", AgentToken: "T", Features: []string{"window", "tcp_half_close"}, TunnelType: "tcp", RemotePort: 5432}},
		{"Jetty's TCP frames",
			`{"type":"tcp_connect","connection_id":"c1","remote_addr":"203.0.113.7:51234"}`,
			Frame{Type: "tcp_connect", ConnectionID: "c1", RemoteAddr: "203.0.113.7:51234"}},
		{"tcp_data with a numeric connection id",
			`{"type":"tcp_data","connection_id":17,"data_b64":"AAEC"}`,
			Frame{Type: "tcp_data", ConnectionID: "17", Data: []byte{0, 1, 2}}},
		{"tcp_close with a reason",
			`{"type":"tcp_close","connection_id":"c1","reason":"eof"}`,
			Frame{Type: "tcp_close", ConnectionID: "c1", Reason: "eof"}},
		{"window_update for a connection",
			`{"type":"window_update","connection_id":"c1","bytes":4096}`,
			Frame{Type: "window_update", ConnectionID: "c1", Bytes: 4096}},
		{"whole response, string headers, PHP escaped slashes",
			`{"type":"http_response","request_id":"r1","status":200,"headers":{"content-type":"text\/html","X-A":"1"},"body_b64":"aGk\/"}`,
			Frame{Type: "http_response", RequestID: "r1", Status: 200,
				Headers: http.Header{"Content-Type": {"text/html"}, "X-A": {"1"}}, Body: []byte("hi?")}},
		{"array header values",
			`{"type":"http_response_start","request_id":"7","status":200,"headers":{"Set-Cookie":["a=1","b=2"],"X":"y"}}`,
			Frame{Type: "http_response_start", RequestID: "7", Status: 200,
				Headers: http.Header{"Set-Cookie": {"a=1", "b=2"}, "X": {"y"}}}},
		{"numeric request id",
			`{"type":"http_response_chunk","request_id":42,"data_b64":"AAEC"}`,
			Frame{Type: "http_response_chunk", RequestID: "42", Data: []byte{0, 1, 2}}},
		{"end with error",
			`{"type":"http_response_end","request_id":"r","error":"upstream reset"}`,
			Frame{Type: "http_response_end", RequestID: "r", Error: "upstream reset"}},
		{"end with trailers, string and array values",
			`{"type":"http_response_end","request_id":"r","trailers":{"x-checksum":"abc","Grpc-Status":["0"],"X-Multi":["a","b"]}}`,
			Frame{Type: "http_response_end", RequestID: "r",
				Trailers: http.Header{"X-Checksum": {"abc"}, "Grpc-Status": {"0"}, "X-Multi": {"a", "b"}}}},
		{"PHP empty array for trailers",
			`{"type":"http_response_end","request_id":"r","trailers":[]}`,
			Frame{Type: "http_response_end", RequestID: "r", Trailers: http.Header{}}},
		{"nulls and unknown fields",
			`{"type":"http_response_end","request_id":"r","error":null,"trailers":null,"extra":{"a":[1,2,{"b":null}],"c":true},"n":-1.5e3}`,
			Frame{Type: "http_response_end", RequestID: "r"}},
		{"whitespace",
			" \n{ \"type\" : \"http_cancel\" ,\t\"request_id\" : \"x\" }\r\n",
			Frame{Type: "http_cancel", RequestID: "x"}},
		{"unicode escapes",
			`{"type":"error","message":"caf\u00e9 \ud83d\ude00 \ud800 \"q\"","code":409}`,
			Frame{Type: "error", Message: "café 😀 \uFFFD \"q\"", Code: "409"}},
		{"query as object",
			`{"type":"http_request","request_id":"1","method":"GET","path":"/","query":{"a":"1","b":["2","3"]},"headers":{},"body_b64":""}`,
			Frame{Type: "http_request", RequestID: "1", Method: "GET", Path: "/", Query: "a=1&b=2&b=3", Headers: http.Header{}, Body: []byte{}}},
		{"unpadded base64",
			`{"type":"tcp_data","connection_id":"c","data_b64":"aGk"}`,
			Frame{Type: "tcp_data", ConnectionID: "c", Data: []byte("hi")}},
		{"PHP empty arrays for headers and query",
			`{"type":"http_response","request_id":"1","status":200,"headers":[],"query":[ ],"body_b64":""}`,
			Frame{Type: "http_response", RequestID: "1", Status: 200, Headers: http.Header{}, Body: []byte{}}},
		{"last duplicate wins",
			`{"type":"a","type":"window_update","request_id":"r","bytes":65536}`,
			Frame{Type: "window_update", RequestID: "r", Bytes: 65536}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			if err := Decode([]byte(c.in), &f); err != nil {
				t.Fatal(err)
			}
			if !framesEqual(&f, &c.want) {
				t.Fatalf("got  %+v\nwant %+v", f, c.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	bad := []string{
		``, `null`, `[]`, `"x"`, `{`, `{"type":}`, `{"type":"a",}`, `{"type":"a"} x`,
		`{"type":"a" "b":1}`, `{type:"a"}`, `{"type":"a\x01"}`, `{"type":"a\q"}`,
		`{"type":"\u12"}`, `{"status":"200"}`, `{"status":-1}`, `{"status":2.5}`,
		`{"status":01}`, `{"bytes":1e400}`, `{"window":-1}`, `{"window":"1"}`, `{"window":4611686018427387904}`, `{"remote_port":-1}`, `{"remote_port":"22"}`, `{"remote_port":2147483648}`, `{"tunnel_type":1}`, `{"data_b64":"!!!!"}`, `{"headers":{"a":1}}`,
		`{"features":"x"}`, `{"trailers":{"a":1}}`, `{"trailers":"x"}`, `{"x":tru}`, `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
		`{"type":"unterminated`,
	}
	for _, in := range bad {
		var f Frame
		err := Decode([]byte(in), &f)
		var se *SyntaxError
		if !errors.Is(err, ErrSyntax) || !errors.As(err, &se) {
			t.Errorf("Decode(%q) = %v, want a SyntaxError", in, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	frames := []Frame{
		{Type: TypeRegister, TunnelID: "demo", AgentToken: "tok\"en", Features: []string{FeatureWindow, FeatureCancel}},
		{Type: TypeRegister, TunnelID: "demo", AgentToken: "T", Features: []string{FeatureAccess},
			BasicAuthUser: "ann", BasicAuthBcrypt: "$2a$10$x", AllowCIDRs: []string{"127.0.0.2/32"}},
		{Type: TypeRegister, TunnelID: "demo", AgentToken: "T", AllowCIDRs: []string{}},
		{Type: TypeRegister, TunnelID: "db", AgentToken: "T", Features: []string{FeatureWindow, FeatureTCPHalfClose}, TunnelType: TunnelTCP, RemotePort: 5432},
		{Type: TypeRegister, TunnelID: "db", AgentToken: "T", TunnelType: TunnelTCP},
		{Type: TypeRegistered, TunnelID: "demo", PublicURL: "http://demo.localhost:8080", Features: []string{}},
		{Type: TypeRegistered, TunnelID: "demo", Features: []string{FeatureWindow, FeatureInitialWindow}, Window: 32 << 10},
		{Type: TypeError, Message: "tunnel \"demo\" is taken", Code: "tunnel_taken"},
		{Type: TypeHTTPRequest, RequestID: "1", Method: "POST", Path: "/a b/ü", Query: "x=1&y=%20",
			Headers: http.Header{"Content-Type": {"application/octet-stream"}, "X-Ctl": {"\x00\x1f\t\n"}}, Body: []byte{0, 255, 10, 13}},
		{Type: TypeHTTPRequestStart, RequestID: "2", Method: "GET", Path: "/", Headers: http.Header{}},
		{Type: TypeHTTPRequestChunk, RequestID: "2", Data: bytes.Repeat([]byte{1, 2, 3}, 1000)},
		{Type: TypeHTTPRequestEnd, RequestID: "2"},
		{Type: TypeHTTPResponseStart, RequestID: "2", Status: 204, Headers: http.Header{"Set-Cookie": {"a=1", "b=2; Path=/"}}},
		{Type: TypeHTTPResponseChunk, RequestID: "2", Data: []byte{}},
		{Type: TypeHTTPResponseEnd, RequestID: "2", Error: "connection reset"},
		{Type: TypeHTTPResponseEnd, RequestID: "3", Trailers: http.Header{"X-Checksum": {"sha256=\"x\""}, "Grpc-Message": {"a", "b\n"}}},
		{Type: TypeHTTPCancel, RequestID: "2"},
		{Type: TypeWindowUpdate, RequestID: "2", Bytes: 1 << 20},
		{Type: TypeTCPConnect, ConnectionID: "c", RemoteAddr: "1.2.3.4:5"},
		{Type: TypeTCPClose, ConnectionID: "c", Reason: ReasonEOF},
		{Type: TypeTCPClose, ConnectionID: "c"},
		{Type: TypeTCPData, ConnectionID: "c", Data: []byte{0, 255, '"'}},
		{Type: TypeTCPData, ConnectionID: "c", Data: []byte{}},
		{Type: TypeWindowUpdate, ConnectionID: "c", Bytes: 512 << 10},
		{Type: TypeUDPData, ConnectionID: "c", RemoteAddr: "[::1]:53", Data: []byte("q")},
	}
	for _, f := range frames {
		enc := AppendFrame(nil, &f, EncodeOptions{MultiValueHeaders: true})
		if !json.Valid(enc) {
			t.Fatalf("invalid JSON: %s", enc)
		}
		var got Frame
		if err := Decode(enc, &got); err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		if !framesEqual(&got, &f) {
			t.Fatalf("round trip of %s\ngot  %+v\nwant %+v", enc, got, f)
		}
		// encoding/json reads the same values.
		var m map[string]any
		if err := json.Unmarshal(enc, &m); err != nil || m["type"] != f.Type {
			t.Fatalf("encoding/json: %v %v", m, err)
		}
	}
}

func TestPlainPeerHeaders(t *testing.T) {
	t.Parallel()
	f := Frame{Type: TypeHTTPRequestStart, RequestID: "1", Method: "GET", Path: "/",
		Headers:  http.Header{"Cookie": {"a=1", "b=2"}, "Accept": {"x", "y"}, "Set-Cookie": {"s=1", "t=2"}},
		Trailers: http.Header{"X-T": {"1", "2"}}}
	enc := string(AppendFrame(nil, &f, EncodeOptions{}))
	for _, want := range []string{`"Cookie":"a=1; b=2"`, `"Accept":"x, y"`, `"Set-Cookie":"s=1"`, `"trailers":{"X-T":"1, 2"}`} {
		if !strings.Contains(enc, want) {
			t.Errorf("%s lacks %s", enc, want)
		}
	}
}

func TestDecodeReusesBuffers(t *testing.T) {
	chunk := AppendFrame(nil, &Frame{Type: TypeHTTPResponseChunk, RequestID: "abc", Data: make([]byte, 32<<10)}, EncodeOptions{})
	var f Frame
	if err := Decode(chunk, &f); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := Decode(chunk, &f); err != nil {
			t.Fatal(err)
		}
	})
	// One allocation: the request_id and type strings share it at most.
	if allocs > 2 {
		t.Fatalf("%v allocations per data frame decode", allocs)
	}
}

// framesEqual compares frames, treating nil and empty byte slices alike.
func framesEqual(a, b *Frame) bool {
	x, y := *a, *b
	if len(x.Data) == 0 && len(y.Data) == 0 {
		x.Data, y.Data = nil, nil
	}
	if len(x.Body) == 0 && len(y.Body) == 0 {
		x.Body, y.Body = nil, nil
	}
	if len(x.Headers) == 0 && len(y.Headers) == 0 {
		x.Headers, y.Headers = nil, nil
	}
	if len(x.Trailers) == 0 && len(y.Trailers) == 0 {
		x.Trailers, y.Trailers = nil, nil
	}
	return reflect.DeepEqual(x, y)
}
