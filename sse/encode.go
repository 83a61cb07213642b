package sse

import (
	"io"
	"strconv"
	"strings"
	"time"
)

// AppendEvent appends the wire form of e to dst: comment lines, then id,
// event, retry and data lines, then the blank line that dispatches the event.
// Every line break in Data or Comment (LF, CR or CRLF) starts a new line of
// the same field, so a parser reads back Data with LF line breaks.
//
// An ID containing CR, LF or NULL, or a Type containing CR or LF, cannot be
// written faithfully and returns ErrInvalidID or ErrInvalidType with dst
// unchanged.
func AppendEvent(dst []byte, e Event) ([]byte, error) {
	if err := checkEvent(e); err != nil {
		return dst, err
	}
	if e.Comment != "" {
		dst = appendLines(dst, ": ", e.Comment)
	}
	if e.ID != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, e.ID...)
		dst = append(dst, '\n')
	}
	if e.Type != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, e.Type...)
		dst = append(dst, '\n')
	}
	if e.Retry > 0 {
		dst = appendRetry(dst, e.Retry)
	}
	dst = appendLines(dst, "data: ", e.Data)
	return append(dst, '\n'), nil
}

// checkEvent reports whether e's ID and Type can be written faithfully.
func checkEvent(e Event) error {
	if strings.ContainsAny(e.ID, "\r\n\x00") {
		return ErrInvalidID
	}
	if strings.ContainsAny(e.Type, "\r\n") {
		return ErrInvalidType
	}
	return nil
}

// AppendComment appends text as comment lines, one per line of text. A
// comment dispatches nothing; servers use it as a keepalive.
func AppendComment(dst []byte, text string) []byte {
	return appendLines(dst, ": ", text)
}

func appendRetry(dst []byte, d time.Duration) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, d.Milliseconds(), 10)
	return append(dst, '\n')
}

// appendLines writes s as one prefixed line per line of s; an empty s is one
// empty line.
func appendLines(dst []byte, prefix, s string) []byte {
	// Two IndexByte scans run at memory speed, where IndexAny checks byte
	// by byte; the LF position is kept until it is passed, so that data
	// with CR line breaks is not rescanned for an LF at every line.
	lf := strings.IndexByte(s, '\n')
	for {
		end := len(s)
		if lf >= 0 {
			end = lf
		}
		i := strings.IndexByte(s[:end], '\r')
		if i < 0 {
			i = lf
		}
		dst = append(dst, prefix...)
		if i < 0 {
			dst = append(dst, s...)
			return append(dst, '\n')
		}
		dst = append(dst, s[:i]...)
		dst = append(dst, '\n')
		skip := i + 1
		if s[i] == '\r' && skip < len(s) && s[skip] == '\n' {
			skip++
		}
		s = s[skip:]
		if lf >= 0 {
			if lf -= skip; lf < 0 {
				lf = strings.IndexByte(s, '\n')
			}
		}
	}
}

// Encoder writes events to an io.Writer. It does not buffer beyond one event
// and does not flush; see Stream for HTTP. Not safe for concurrent use.
type Encoder struct {
	w   io.Writer
	buf []byte
}

// NewEncoder returns an encoder writing to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Encode writes one event with a single Write call.
func (enc *Encoder) Encode(e Event) error {
	b, err := AppendEvent(enc.buf[:0], e)
	if err != nil {
		return err
	}
	enc.buf = b
	_, err = enc.w.Write(b)
	return err
}

// Comment writes text as comment lines.
func (enc *Encoder) Comment(text string) error {
	enc.buf = AppendComment(enc.buf[:0], text)
	_, err := enc.w.Write(enc.buf)
	return err
}

// Retry writes a retry field alone (no event), setting the reader's
// reconnection time; unlike Event.Retry it can write 0.
func (enc *Encoder) Retry(d time.Duration) error {
	enc.buf = appendRetry(enc.buf[:0], d)
	_, err := enc.w.Write(enc.buf)
	return err
}
