package tunnel

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// TestV1InformationalFromAgent: a v1 agent's http_response_info frames
// reach the request's Got1xxResponse hook in order, before the response;
// past maxInformational, after the head, or with a status that is not an
// informational one (or from an agent without the feature) they are
// counted as frame errors and dropped, and the request is still answered.
func TestV1InformationalFromAgent(t *testing.T) {
	t.Parallel()
	info := func(status int) string {
		return fmt.Sprintf(`{"type":"http_response_info","request_id":"1","status":%d,"headers":{"Link":"</%d>"}}`, status, status)
	}
	var lines []string
	for range maxInformational + 2 {
		lines = append(lines, info(103))
	}
	lines = append(lines, info(200), info(101),
		`{"type":"http_response_start","request_id":"1","status":200}`, info(103),
		`{"type":"http_response_chunk","request_id":"1","data_b64":"b2s="}`, `{"type":"http_response_end","request_id":"1"}`)
	for _, tc := range []struct {
		name     string
		features []string
		want1xx  int
		errors   string
	}{
		{"with the feature", []string{wire.FeatureInformational}, maxInformational, "invalid=3 too_many_informational=2"},
		{"without", nil, 0, "unknown_type=13"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			counts := map[string]int{}
			cfg := Config{PongTimeout: 5 * time.Second, OnFrameError: func(kind string) {
				mu.Lock()
				counts[kind]++
				mu.Unlock()
			}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, ws, runDone := rawAgentSession(t, ctx, cfg, false, append([]string{wire.FeatureRequestStream}, tc.features...)...)
			drained := make(chan struct{})
			go func() {
				defer close(drained)
				first := true
				for {
					_, _, err := ws.ReadMessage()
					if err != nil {
						return
					}
					if first {
						first = false
						for _, l := range lines {
							ws.WriteMessage(websocket.TextMessage, []byte(l))
						}
					}
				}
			}()
			var got []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				got = append(got, fmt.Sprintf("%d %s", code, h.Get("Link")))
				return nil
			}}
			rctx, rcancel := context.WithTimeout(httptrace.WithClientTrace(ctx, trace), time.Minute)
			defer rcancel()
			req, _ := http.NewRequestWithContext(rctx, "GET", "http://t/", nil)
			resp, err := s.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Errorf("response %d %q, want 200 ok", resp.StatusCode, body)
			}
			if len(got) != tc.want1xx {
				t.Errorf("got %d informational responses %v, want %d", len(got), got, tc.want1xx)
			}
			for _, g := range got {
				if g != "103 </103>" {
					t.Errorf("informational response %q, want 103 </103>", g)
				}
			}
			// The counts are final once the response ended: its end
			// was the last frame.
			mu.Lock()
			var parts []string
			for _, k := range []string{"invalid", "late", "too_many_informational", "unknown_type"} {
				if counts[k] > 0 {
					parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
				}
			}
			mu.Unlock()
			if strings.Join(parts, " ") != tc.errors {
				t.Errorf("frame errors %v, want %s", parts, tc.errors)
			}
			fuzzEnd(t, s, runDone, ws, drained)
		})
	}
}
