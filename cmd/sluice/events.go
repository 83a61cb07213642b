package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/sse"
)

const eventsHelp = `Usage: sluice events URL [flags]

Connects to a Server-Sent Events stream and prints every event as it is
dispatched, reconnecting as a browser's EventSource does (with the last
event ID, after the server's retry delay, with backoff on repeated
failures). Status messages go to stderr, events to stdout.

Output is one block per event: a line "event: TYPE (id ID)", then the data.
With --json it is one JSON object per line:
  {"type":"message","data":"...","id":"42","retry":3000}
where id is the last event ID at dispatch ("" if none) and retry the
reconnection time in ms set by the stream so far (null if none).

Exit status: 0 when the stream ended cleanly (--no-reconnect) or after
--max-events events, 1 on an error (a non-200 status, a Content-Type other
than text/event-stream, a failed connection with --no-reconnect), 2 on a
usage error, 130 when interrupted.
`

type eventsOptions struct {
	json        bool
	noReconnect bool
	lastEventID string
	headers     headerFlag
	maxEvents   int
	quiet       bool
	tls         *tls.Config // --ca, or nil
	client      sse.ClientConfig
}

func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("events", eventsHelp, stderr)
	var o eventsOptions
	fs.BoolVar(&o.json, "json", false, "print one JSON object per event: type, data, id, retry")
	fs.BoolVar(&o.noReconnect, "no-reconnect", false, "exit when the first stream ends: 0 if it ended cleanly, 1 on an error")
	fs.StringVar(&o.lastEventID, "last-event-id", "", "send this `ID` as Last-Event-ID on the first request")
	fs.Var(&o.headers, "H", "add a request header `'Name: value'` (repeatable)")
	fs.IntVar(&o.maxEvents, "max-events", 0, "exit 0 after `N` events (0: no limit)")
	fs.BoolVar(&o.quiet, "quiet", false, "print no status messages on stderr")
	fs.DurationVar(&o.client.Retry, "retry", sse.DefaultRetry, "reconnection time until the stream sets one")
	fs.DurationVar(&o.client.MaxBackoff, "max-backoff", sse.DefaultMaxBackoff, "longest wait between reconnects after repeated failures")
	fs.DurationVar(&o.client.ResponseHeaderTimeout, "header-timeout", sse.DefaultResponseHeaderTimeout, "longest wait for the response headers (negative: none)")
	fs.DurationVar(&o.client.IdleTimeout, "idle-timeout", 0, "reconnect when no byte (event or keepalive) arrives for this long (0: never)")
	fs.IntVar(&o.client.MaxEventSize, "max-event-size", sse.DefaultMaxEventSize, "largest event accepted, in bytes")
	ca := caFlag(fs)
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if _, o.tls, err = ca(); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	if len(pos) != 1 {
		fs.Usage()
		return cli.Usagef("events: want one URL, got %d arguments", len(pos))
	}
	if _, err := api.ParseURL(pos[0]); err != nil {
		return cli.Usagef("events: %v", err)
	}
	return streamEvents(ctx, pos[0], o, stdout, stderr)
}

// streamEvents runs the client and prints its events until the end.
func streamEvents(ctx context.Context, rawURL string, o eventsOptions, stdout, stderr io.Writer) error {
	cfg := o.client
	cfg.NoReconnect = o.noReconnect
	cfg.LastEventID = o.lastEventID
	cfg.Header = http.Header{}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = httpClient(o.tls)
	}
	for _, h := range o.headers {
		name, value, _ := strings.Cut(h, ":")
		cfg.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	status := func(format string, args ...any) {
		if !o.quiet {
			fmt.Fprintf(stderr, format+"\n", args...)
		}
	}
	cfg.OnConnect = func(resp *http.Response) { status("connected to %s (%s)", rawURL, resp.Status) }
	cfg.OnRetry = func(err error, delay time.Duration) {
		if err == nil {
			status("stream ended; reconnecting in %v", delay.Round(time.Millisecond))
		} else {
			status("%v; reconnecting in %v", err, delay.Round(time.Millisecond))
		}
	}
	client, err := sse.NewClient(rawURL, cfg)
	if err != nil {
		return err
	}

	out := bufio.NewWriter(stdout)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	n := 0
	for ev, err := range client.Events(ctx) {
		if err != nil {
			return describeEventsError(err)
		}
		if o.json {
			err = enc.Encode(jsonEvent(ev, client))
		} else {
			err = printEvent(out, ev)
		}
		if err == nil {
			err = out.Flush()
		}
		if err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		n++
		if o.maxEvents > 0 && n >= o.maxEvents {
			return nil
		}
	}
	if ctx.Err() == nil && o.noReconnect {
		status("stream ended")
	}
	return nil
}

// eventJSON is the --json form of an event. The keys are a contract: tests
// outside the project read them.
type eventJSON struct {
	Type  string `json:"type"`
	Data  string `json:"data"`
	ID    string `json:"id"`
	Retry *int64 `json:"retry"`
}

func jsonEvent(ev sse.Event, c *sse.Client) eventJSON {
	j := eventJSON{Type: ev.Type, Data: ev.Data, ID: ev.ID}
	if d, ok := c.Retry(); ok {
		ms := d.Milliseconds()
		j.Retry = &ms
	}
	return j
}

func printEvent(w io.Writer, ev sse.Event) error {
	head := "event: " + ev.Type
	if ev.ID != "" {
		head += " (id " + ev.ID + ")"
	}
	_, err := fmt.Fprintf(w, "%s\n%s\n\n", head, ev.Data)
	return err
}

// describeEventsError turns the client's fatal errors into one clear line.
func describeEventsError(err error) error {
	var se *sse.StatusError
	var ce *sse.ContentTypeError
	switch {
	case errors.Is(err, sse.ErrNoContent):
		return errors.New("server answered 204 No Content: it asks clients not to reconnect")
	case errors.As(err, &se):
		msg := "server answered " + se.Status + ", not 200 OK"
		if se.Body != "" {
			msg += ": " + firstLine(se.Body, 200)
		}
		return errors.New(msg)
	case errors.As(err, &ce):
		ct := ce.ContentType
		if ct == "" {
			ct = "no Content-Type"
		}
		return fmt.Errorf("server answered with %s, not text/event-stream: this is not an event stream", ct)
	}
	return err
}

func firstLine(s string, max int) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
