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
// A client made with NewRequestClient sends a request of the caller's, such
// as a POST with a JSON body, on every connection; see there for how its body
// is sent again.
//
// LastEventID and Retry are safe to call concurrently with Events.
type Client struct {
	req *http.Request // the request each connection sends, without context
	cfg ClientConfig

	bodySent bool // req.Body was used; reconnects need req.GetBody

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

// NewRequestClient returns a client that sends req on every connection:
// its method, URL, headers and body, for streams that answer a POST, such as
// the APIs of language models. Header entries of cfg are added to req's,
// and Accept: text/event-stream and Cache-Control: no-cache unless req has
// its own; reconnects add Last-Event-ID. req's context is not used: the
// context given to Events governs every connection. It does no I/O; an
// error wraps ErrInvalidURL when req's URL is not http or https with a
// host.
//
// The first connection sends req.Body; every reconnect sends a new body
// from req.GetBody, which http.NewRequest sets for bodies from
// bytes.Buffer, bytes.Reader and strings.Reader. Without GetBody a request
// with a body cannot be sent again: where the client would reconnect, the
// iteration ends with an error wrapping ErrBodyNotReplayable instead.
//
// A stream that ends when its answer is complete, as a model's does, is
// best read with NoReconnect: reconnecting would ask the question again.
func NewRequestClient(req *http.Request, cfg ClientConfig) (*Client, error) {
	if req == nil || req.URL == nil {
		return nil, fmt.Errorf("sse: new client: %w: no request URL", ErrInvalidURL)
	}
	r := req.Clone(context.Background())
	if r.Host == "" {
		r.Host = r.URL.Host
	}
	c, err := newClient(r, cfg)
	if err != nil {
		return nil, err
	}
	if c.lastID == "" {
		c.lastID = req.Header.Get("Last-Event-ID")
	}
	return c, nil
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
// (*StatusError, *ContentTypeError, ErrNoContent, ErrBodyNotReplayable), or,
// with NoReconnect, until the first connection ends. Breaking out of the loop closes the
// connection. Events must not be iterated twice at the same time.
//
// An event's ID is the last event ID at dispatch, carried across
// reconnects, as a browser's MessageEvent.lastEventId. The reconnection time
// is the stream's state, not an event's: see Retry. To pass the events on to
// another reader, use a Relay.
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
			if !c.canResend() {
				if err != nil {
					err = fmt.Errorf("%w; the connection ended with: %w", ErrBodyNotReplayable, err)
				} else {
					err = ErrBodyNotReplayable
				}
				yield(Event{}, err)
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
	return errors.Is(err, ErrNoContent) || errors.Is(err, ErrBodyNotReplayable) || errors.As(err, &se) || errors.As(err, &ce)
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

// connect runs one connection. healthy says whether it deserves a backoff
// reset; stopped that the consumer broke out of the loop.
func (c *Client) connect(ctx context.Context, yield func(Event, error) bool) (healthy, stopped bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	req, err := c.request(ctx)
	if err != nil {
		return false, false, err
	}
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
			// A timeout of ours may surface as any read error, even EOF.
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				return healthy, false, cause
			}
			if err == io.EOF {
				return healthy, false, nil
			}
			return healthy, false, err
		}
		events++
		c.mu.Lock()
		c.lastID = ev.ID
		c.mu.Unlock()
		if !yield(ev, nil) {
			return true, true, nil
		}
	}
}

// hasBody reports whether the client's request has a body.
func (c *Client) hasBody() bool { return c.req.Body != nil && c.req.Body != http.NoBody }

// canResend reports whether the request can be sent again.
func (c *Client) canResend() bool { return !c.hasBody() || c.req.GetBody != nil || !c.bodySent }

// request returns the request for the next connection, with a fresh body.
func (c *Client) request(ctx context.Context) (*http.Request, error) {
	req := c.req.Clone(ctx)
	if c.hasBody() {
		if c.bodySent {
			if c.req.GetBody == nil {
				return nil, ErrBodyNotReplayable
			}
			body, err := c.req.GetBody()
			if err != nil {
				return nil, fmt.Errorf("sse: request body: %w", err)
			}
			req.Body = body
		}
		c.bodySent = true
	}
	for k, v := range c.cfg.Header {
		req.Header[k] = append(req.Header[k], v...)
	}
	if h := req.Header.Get("Host"); h != "" {
		req.Host = h // net/http sends req.Host, not a Host header
		req.Header.Del("Host")
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "text/event-stream")
	}
	if req.Header.Get("Cache-Control") == "" {
		req.Header.Set("Cache-Control", "no-cache")
	}
	return req, nil
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
