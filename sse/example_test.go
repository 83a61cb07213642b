package sse_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/sse"
)

// A POST stream, as the APIs of language models serve: the answer ends the
// stream, so the client does not reconnect.
func ExampleNewRequestClient() {
	ctx := context.Background()
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"Hello"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.example.com/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer KEY")
	c, err := sse.NewRequestClient(req, sse.ClientConfig{NoReconnect: true})
	if err != nil {
		log.Fatal(err)
	}
	for ev, err := range c.Events(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		if ev.Data == "[DONE]" {
			break
		}
		fmt.Print(ev.Data)
	}
}

// A server that passes an upstream's events on to each of its clients.
func ExampleRelay() {
	http.HandleFunc("/relay", func(w http.ResponseWriter, r *http.Request) {
		up, err := sse.NewClient("https://upstream.example/events", sse.ClientConfig{LastEventID: r.Header.Get("Last-Event-ID")})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		s, err := sse.NewStream(w, r, sse.StreamConfig{})
		if err != nil {
			return
		}
		defer s.Close()
		relay := sse.NewRelay(up, s.LastEventID())
		var buf []byte
		for ev, err := range up.Events(r.Context()) {
			if err != nil {
				return
			}
			if buf, err = relay.AppendEvent(buf[:0], ev); err != nil {
				return
			}
			if err := s.SendEncoded(r.Context(), buf); err != nil {
				return
			}
		}
	})
}

// A reconnecting loop of one's own with the client's backoff.
func ExampleBackoff() {
	ctx := context.Background()
	connect := func(context.Context) error { return nil }
	b := sse.Backoff{Initial: 250 * time.Millisecond, Max: 30 * time.Second, ResetAfter: 30 * time.Second}
	attempt := 0
	for ctx.Err() == nil {
		start := time.Now()
		_ = connect(ctx)
		if b.Healthy(time.Since(start)) {
			attempt = 0 // it lasted: start over
		}
		attempt++
		t := time.NewTimer(b.Delay(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}
