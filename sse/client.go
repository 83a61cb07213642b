package sse

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Defaults for ClientConfig's zero values.
const (
	DefaultRetry                 = 3 * time.Second
	DefaultMaxBackoff            = 30 * time.Second
	DefaultResponseHeaderTimeout = 15 * time.Second
	// A connection counts as healthy, and resets the backoff, when it
	// dispatched an event or stayed open this long.
	healthyAfter = 5 * time.Second
	// The smallest base for backoff growth, so that "retry: 0" and a
	// failing server do not make a busy loop.
	minBackoffBase = 100 * time.Millisecond
)

// ClientConfig configures a Client. The zero value means the defaults.
type ClientConfig struct {
	// HTTPClient makes the requests. Nil means http.DefaultClient. Its
	// Timeout should be zero: a stream has no total time limit; the client
	// applies ResponseHeaderTimeout and IdleTimeout itself.
	HTTPClient *http.Client

	// Header is sent with every request, including every reconnect. A Host
	// entry sets the request's Host.
	Header http.Header

	// LastEventID is sent as Last-Event-ID on the first request.
	LastEventID string

	// Retry is the reconnection time until the stream sets one. Zero means
	// DefaultRetry (3 s).
	Retry time.Duration

	// MaxBackoff caps the random part of the delay between reconnects,
	// which grows with repeated failures (see Client). Zero means
	// DefaultMaxBackoff (30 s). The reconnection time itself is always
	// waited, even when it is longer.
	MaxBackoff time.Duration

	// ResponseHeaderTimeout bounds the wait for the response headers. Zero
	// means DefaultResponseHeaderTimeout (15 s); negative disables it.
	ResponseHeaderTimeout time.Duration

	// IdleTimeout, if positive, drops and reconnects a connection that
	// receives no byte for this long. Keepalive comments count as bytes.
	IdleTimeout time.Duration

	// MaxEventSize is passed to the parser. Zero means DefaultMaxEventSize.
	MaxEventSize int

	// NoReconnect ends the iteration when the first connection ends: with
	// no error if the stream ended cleanly, with the error otherwise.
	NoReconnect bool

	// OnRetry, if set, is called before each wait to reconnect with the
	// reason (nil for a clean end of stream) and the delay.
	OnRetry func(err error, delay time.Duration)

	// OnConnect, if set, is called when a connection has been accepted
	// (status 200, event stream), before its first event.
	OnConnect func(resp *http.Response)

	// OnComment, if set, is called for each comment line received.
	OnComment func(text string)
}

// Client reads an event stream and reconnects as the standard says: it sends
// Accept: text/event-stream, sends Last-Event-ID with the last id on every
// reconnect, honours the server's retry, stops for good on 204 No Content,
// and fails without reconnecting on another non-200 status or a Content-Type
// that is not text/event-stream. It reconnects after the end of a stream and
// after network errors, and never has two connections open at once.
//
// Before each reconnect it waits the reconnection time (the server's retry,
// or ClientConfig.Retry) plus a random delay from a [Backoff] whose Initial
// is the reconnection time (at least 100 ms) and whose Max is
// ClientConfig.MaxBackoff: up to the reconnection time again after a healthy
// connection (one that dispatched an event or stayed open 5 s), doubling
// with each failure in a row up to MaxBackoff. The jitter spreads the
// clients of a restarted server over time.
//
// LastEventID and Retry are safe to call concurrently with Events.
type Client struct {
	req *http.Request // the request each connection sends, without context
	cfg ClientConfig

	mu       sync.Mutex
	lastID   string
	retry    time.Duration
	retrySet bool
}

// NewClient returns a client that sends GET requests to rawURL. It does no
// I/O. An error wraps ErrInvalidURL when rawURL is not an absolute http or
// https URL with a host.
func NewClient(rawURL string, cfg ClientConfig) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("sse: new client: %w: %w", ErrInvalidURL, err)
	}
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header),
		Host:       u.Host,
	}
	return newClient(req, cfg)
}

func newClient(req *http.Request, cfg ClientConfig) (*Client, error) {
	if err := checkURL(req.URL); err != nil {
		return nil, fmt.Errorf("sse: new client: %w", err)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.ResponseHeaderTimeout == 0 {
		cfg.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	return &Client{req: req, cfg: cfg, lastID: cfg.LastEventID}, nil
}

// checkURL accepts absolute http and https URLs with a host.
func checkURL(u *url.URL) error {
	switch {
	case u == nil:
		return fmt.Errorf("%w: no URL", ErrInvalidURL)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: %q has scheme %q", ErrInvalidURL, u.Redacted(), u.Scheme)
	case u.Host == "":
		return fmt.Errorf("%w: %q has no host", ErrInvalidURL, u.Redacted())
	}
	return nil
}

// LastEventID returns the last event ID received so far.
func (c *Client) LastEventID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastID
}

// Retry returns the reconnection time set by the stream so far, and whether
// the stream set one at all.
func (c *Client) Retry() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retry, c.retrySet
}

// Events connects and yields events until ctx ends (a clean end: the
// iteration stops with no error), until a fatal error, which is yielded last
// (*StatusError, *ContentTypeError, ErrNoContent), or, with NoReconnect,
// until the first connection ends. Breaking out of the loop closes the
// connection. Events must not be iterated twice at the same time.
//
// An event's ID is the last event ID at dispatch, and its Retry the
// reconnection time set by the stream so far (0 if none), both carried
// across reconnects.
func (c *Client) Events(ctx context.Context) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		attempt := 0
		for ctx.Err() == nil {
			healthy, stopped, err := c.connect(ctx, yield)
			if stopped || ctx.Err() != nil {
				return
			}
			if isFatal(err) {
				yield(Event{}, err)
				return
			}
			if c.cfg.NoReconnect {
				if err != nil {
					yield(Event{}, err)
				}
				return
			}
			if healthy {
				attempt = 0
			}
			attempt++
			delay := c.backoff().Delay(attempt)
			if c.cfg.OnRetry != nil {
				c.cfg.OnRetry(err, delay)
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}
}

func isFatal(err error) bool {
	var se *StatusError
	var ce *ContentTypeError
	return errors.Is(err, ErrNoContent) || errors.As(err, &se) || errors.As(err, &ce)
}

// backoff returns the policy for the next wait (see Client): it depends on
// the reconnection time, which the stream may change.
func (c *Client) backoff() Backoff {
	retry, set := c.Retry()
	if !set {
		retry = c.cfg.Retry
	}
	return Backoff{Initial: max(retry, minBackoffBase), Max: c.cfg.MaxBackoff, Min: retry, ResetAfter: healthyAfter}
}

// timeoutError is a timeout of the client's own; it satisfies net.Error.
type timeoutError struct{ what string }

func (e *timeoutError) Error() string   { return "sse: " + e.what }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// connect runs one connection. healthy says whether it deserves a backoff
// reset; stopped that the consumer broke out of the loop.
func (c *Client) connect(ctx context.Context, yield func(Event, error) bool) (healthy, stopped bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	req := c.req.Clone(ctx)
	for k, v := range c.cfg.Header {
		req.Header[k] = append([]string(nil), v...)
	}
	if h := req.Header.Get("Host"); h != "" {
		req.Host = h // net/http sends req.Host, not a Host header
		req.Header.Del("Host")
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if id := c.LastEventID(); id != "" {
		req.Header.Set("Last-Event-ID", id)
	} else {
		req.Header.Del("Last-Event-ID")
	}

	var headerTimer *time.Timer
	if d := c.cfg.ResponseHeaderTimeout; d > 0 {
		headerTimer = time.AfterFunc(d, func() {
			cancel(&timeoutError{fmt.Sprintf("no response headers after %v", d)})
		})
	}
	start := time.Now()
	resp, err := c.cfg.HTTPClient.Do(req)
	if headerTimer != nil {
		headerTimer.Stop()
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = cause
		}
		return false, false, err
	}
	defer resp.Body.Close()

	if err := checkResponse(resp); err != nil {
		return false, false, err
	}
	body := io.Reader(resp.Body)
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") && !resp.Uncompressed {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return false, false, fmt.Errorf("sse: gzip body: %w", err)
		}
		body = zr
	}
	if d := c.cfg.IdleTimeout; d > 0 {
		ir := &idleReader{r: body, d: d}
		ir.t = time.AfterFunc(d, func() {
			cancel(&timeoutError{fmt.Sprintf("no data for %v (idle timeout)", d)})
		})
		defer ir.t.Stop()
		body = ir
	}
	if c.cfg.OnConnect != nil {
		c.cfg.OnConnect(resp)
	}

	p := NewParser(body, ParserConfig{
		MaxEventSize: c.cfg.MaxEventSize,
		OnComment:    c.cfg.OnComment,
		LastEventID:  c.LastEventID(),
	})
	events := 0
	for {
		ev, err := p.Next()
		if r, set := p.Retry(); set {
			c.mu.Lock()
			c.retry, c.retrySet = r, true
			c.mu.Unlock()
		}
		if err != nil {
			healthy = events > 0 || c.backoff().Healthy(time.Since(start))
			if err == io.EOF {
				return healthy, false, nil
			}
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				err = cause
			}
			return healthy, false, err
		}
		events++
		c.mu.Lock()
		c.lastID = ev.ID
		ev.Retry = 0
		if c.retrySet {
			ev.Retry = c.retry
		}
		c.mu.Unlock()
		if !yield(ev, nil) {
			return true, true, nil
		}
	}
}

// checkResponse applies the standard's rules to the response status and
// Content-Type.
func checkResponse(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		return ErrNoContent
	default:
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &StatusError{
			StatusCode: resp.StatusCode,
			Status:     resp.Status,
			Body:       strings.TrimSpace(decodeString(snippet)),
		}
	}
	ct := resp.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "text/event-stream" {
		return &ContentTypeError{ContentType: ct}
	}
	return nil
}

// idleReader restarts its timer on every read that returns data.
type idleReader struct {
	r io.Reader
	d time.Duration
	t *time.Timer
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.d)
	}
	return n, err
}
