package tunnel

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// v1Reply is what a well-behaved v1 agent sends for request 1: a 200 with
// the body "ok", one frame per line.
const v1Reply = `{"type":"http_response","request_id":"1","status":200,"headers":{"Content-Type":"text/plain"},"body_b64":"b2s="}`

// FuzzV1Session: whatever frames a v1 agent sends after registering (one
// message per line of the input; a line starting with NUL goes as a binary
// message), the edge's session neither panics nor hangs: the request ends
// with a response or an error, and Close and Run return. The well-formed
// reply gives 200 "ok", with any features announced.
func FuzzV1Session(f *testing.F) {
	streamed := `{"type":"http_response_start","request_id":"1","status":200,"headers":{"Content-Type":["text/plain"]}}` + "\n" +
		`{"type":"http_response_chunk","request_id":"1","data_b64":"b2s="}` + "\n" +
		`{"type":"http_response_end","request_id":"1"}`
	for _, seed := range []string{
		v1Reply,
		streamed,
		`{"type":"window_update","request_id":"1","bytes":9223372036854775807}` + "\n" + v1Reply,
		`{"type":"http_response_chunk","request_id":"1","data_b64":"b2s="}` + "\n" + v1Reply,
		`{"type":"http_response_start","request_id":"1","status":200}` + "\n" + `{"type":"http_response_start","request_id":"1","status":500}`,
		`{"type":"http_response_end","request_id":"1","error":"boom"}`,
		`{"type":"http_response","request_id":"999","status":200}` + "\n" + v1Reply,
		`{"type":"http_response","request_id":"1","status":99999,"headers":{"":""}}`,
		`{"type":"surprise"}` + "\n" + `not json` + "\n" + "\x00binary" + "\n" + v1Reply,
		`{"type":"register","tunnel_id":"again"}` + "\n" + v1Reply,
		// TCP frames from an agent the session opened no connection for.
		`{"type":"tcp_data","connection_id":"1","data_b64":"b2s="}` + "\n" + v1Reply,
		`{"type":"tcp_close","connection_id":"1","reason":"eof"}` + "\n" + `{"type":"tcp_close","connection_id":"1"}` + "\n" + v1Reply,
		`{"type":"window_update","connection_id":"1","bytes":65536}` + "\n" + `{"type":"tcp_data","connection_id":77,"data_b64":"!!"}` + "\n" + v1Reply,
		`{"type":"tcp_connect","connection_id":"2","remote_addr":"1.2.3.4:5"}` + "\n" + v1Reply,
		`{"type":"http_response_start","request_id":"1","status":101,"headers":{"Upgrade":"websocket"}}`,
		`{"type":"http_response","request_id":"1","status":200,"body_b64":"!!"}`,
		`{"type":"http_response","request_id":1,"status":"200"}`,
		`{"type":"http_response_chunk","request_id":"1","data_b64":"` + strings.Repeat("QUFB", 1000) + `"}`,
		`{"type":"http_response_info","request_id":"1","status":100,"headers":{}}` + "\n" +
			`{"type":"http_response_info","request_id":"1","status":103,"headers":{"Link":"</a>"}}` + "\n" + v1Reply,
		`{"type":"http_response_info","request_id":"1","status":101}` + "\n" + `{"type":"http_response_info","request_id":"1","status":-1}` + "\n" + v1Reply,
		`{"type":"http_response_start","request_id":"1","status":200}` + "\n" + `{"type":"http_response_info","request_id":"1","status":103}`,
	} {
		f.Add([]byte(seed), uint8(0))
		f.Add([]byte(seed), uint8(7))
		f.Add([]byte(seed), uint8(255))
	}
	f.Fuzz(func(t *testing.T, input []byte, features uint8) { v1Input(t, input, features) })
}

// v1Input is one run of FuzzV1Session. The bits of features choose what
// the agent announces.
func v1Input(t *testing.T, input []byte, features uint8) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var announce []string
	for i, f := range wire.Features {
		if features&(1<<i) != 0 {
			announce = append(announce, f)
		}
	}
	s, ws, runDone := rawAgentSession(t, ctx, Config{PongTimeout: 5 * time.Second, V1: V1Config{MaxFrameSize: 64 << 10}}, false, announce...)

	// The agent waits for the request's head (its id is "1"), then sends
	// the input; it reads on until the connection ends.
	drained := make(chan struct{})
	gotRequest := make(chan struct{})
	go func() {
		defer close(drained)
		first := true
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if first && bytes.Contains(msg, []byte(`"http_request`)) {
				first = false
				close(gotRequest)
			}
		}
	}()
	go func() {
		select {
		case <-gotRequest:
		case <-time.After(time.Minute):
			return
		}
		for line := range bytes.SplitSeq(input, []byte("\n")) {
			typ := websocket.TextMessage
			if len(line) > 0 && line[0] == 0 {
				typ, line = websocket.BinaryMessage, line[1:]
			}
			if ws.WriteMessage(typ, line) != nil {
				return
			}
		}
	}()

	fuzzRequest(t, ctx, s, bytes.Equal(input, []byte(v1Reply)))
	fuzzEnd(t, s, runDone, ws, drained)
}
