package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/textproto"

	"github.com/sluicehq/sluice/internal/inspect"
	"github.com/sluicehq/sluice/tunnel"
)

// headScan follows the local server's bytes on a pipe while a request is
// out, far enough to tell its informational responses (1xx but 101: 100,
// 102, 103 Early Hints) from the final one, so that the response header
// timeout runs until the final head starts, as it does in the agent's
// HTTP/1.1 client (all of a request's heads within one timeout). It reads
// each head's first statusPrefix bytes ("HTTP/1.1 103"), and an
// informational head to its end (an empty line, after CRLF or a bare LF,
// as net/http's parser takes them); it keeps no more than that prefix, so
// bytes split anywhere give the same answer. Bytes that are not an
// informational status line count as the final head: the edge's parser
// judges them.
type headScan struct {
	pre  [statusPrefix]byte
	n    int  // bytes of pre read
	info bool // the current head is informational; its end is being looked for
	st   byte // where in an informational head: midLine, lineStart or crAtStart
}

// statusPrefix is how much of a status line tells an informational one:
// "HTTP/1.1 1xx".
const statusPrefix = len("HTTP/1.1 103")

const (
	midLine   = iota // inside a line of the head
	lineStart        // just after a line's LF
	crAtStart        // a CR at the start of a line: the empty line, if LF follows
)

// emptyLine steps a head's line state (midLine at its start) over its
// next byte c, and reports whether c ended the empty line that ends the
// head: net/textproto's rule, "\n" or "\r\n" after a line's LF.
func emptyLine(st *byte, c byte) bool {
	switch {
	case c == '\n' && *st != midLine:
		return true
	case c == '\n':
		*st = lineStart
	case c == '\r' && *st == lineStart:
		*st = crAtStart
	default:
		*st = midLine
	}
	return false
}

// final reads b, the next bytes of the answer, and reports whether the
// final response's head started, and at what offset in b (negative if it
// began in the bytes before b). After it did, the scan is over until reset.
func (s *headScan) final(b []byte) (at int, ok bool) {
	for i := 0; i < len(b); {
		if !s.info {
			start := i - s.n // where this head began (before b if negative)
			k := copy(s.pre[s.n:], b[i:])
			s.n += k
			i += k
			if s.n < statusPrefix {
				return 0, false
			}
			if !informational(s.pre[:]) {
				return start, true
			}
			s.info, s.st = true, midLine
			continue
		}
		c := b[i]
		i++
		if emptyLine(&s.st, c) {
			s.info, s.n = false, 0 // the head ended; the next starts at i
		}
	}
	return 0, false
}

// status is the final head's status code as its first bytes say, once
// final reported it (0 if they are no status line).
func (s *headScan) status() int {
	code := 0
	for _, c := range s.pre[9:statusPrefix] {
		if !isDigit(c) {
			return 0
		}
		code = code*10 + int(c-'0')
	}
	return code
}

// reset readies the scan for the next request's answer.
func (s *headScan) reset() { *s = headScan{} }

// informational reports whether p, a head's first statusPrefix bytes, is
// the status line of a 1xx response other than 101 (which switches
// protocols: the final answer).
func informational(p []byte) bool {
	return string(p[:len("HTTP/1.")]) == "HTTP/1." && isDigit(p[7]) && p[8] == ' ' &&
		p[9] == '1' && isDigit(p[10]) && isDigit(p[11]) && string(p[9:12]) != "101"
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// respFollow follows one response on a pipe to its end, for the console
// line: its status, the bytes of its body (a chunked body's data, as the
// handler's line counts them), and where it ends (a length, the last
// chunk and trailers, or the connection's close); and for the inspector's
// record, if it has one: the head parsed, the body's bytes (de-chunked)
// as they pass, the trailers. It is fed the response's bytes from its
// final head on (headScan finds it) and keeps only that head and the
// trailers, each up to followHeadMax. It never changes the bytes: framing
// it cannot follow (a head too large, a bad chunk line, which the edge's
// parser refuses too) ends it at the pipe's close.
type respFollow struct {
	headReq bool // the request was a HEAD: no body, whatever the head says
	rec     *inspect.Recorder
	head    []byte
	trailer []byte // the trailer section's bytes, while rec is set
	st      int    // fHead, fLength, fChunkSize, fChunkExt, fChunkData, fChunkCRLF, fTrailer, fClose, fDone
	status  int    // the final status, once the head was read
	body    int64  // body bytes so far
	left    int64  // of the length, or of the current chunk
	size    int    // hex digits of the chunk size line
	ext     byte   // in the rest of a chunk size line: extNone, extSpace, extParams, plus extCR after a CR
	lineLen int    // bytes of the chunk size line so far
	line    byte   // in the head or the trailers: midLine, lineStart or crAtStart
	crlf    int    // bytes of a chunk's closing CRLF read
}

// The rest of a chunk size line, after its hex digits, as net/http's
// chunked reader takes it: spaces or tabs, or an extension after ';'
// (whatever its bytes), then CRLF; a bare LF, a CR elsewhere, any other
// byte, and a line of maxChunkLine bytes or more are refused.
const (
	extNone   = iota // nothing yet
	extSpace         // spaces or tabs: only CRLF may follow
	extParams        // after ';'
	extCR     = 4    // a CR was the last byte: LF must follow
)

// maxChunkLine is net/http's bound on a chunk size line (its
// maxLineLength), CRLF included.
const maxChunkLine = 4096

// reset readies f for the response to a request (HEAD or not) whose
// final status line says status, recorded by rec if it is not nil,
// keeping its head buffer.
func (f *respFollow) reset(headReq bool, status int, rec *inspect.Recorder) {
	*f = respFollow{headReq: headReq, status: status, rec: rec, head: f.head[:0]}
}

// cut is the record's failure when the connection ended with err before
// the response's end: none when its body ends with the connection.
func (f *respFollow) cut(err error) error {
	if f.st == fClose && err == io.EOF {
		return nil
	}
	return inspect.ErrAborted
}

// lost gives up following the response's framing (why says what it
// could not follow, for the record's note): its end is the connection's
// (the edge's parser refuses it too), and a record keeps what follows as
// it came.
func (f *respFollow) lost(why string) {
	f.st = fClose
	if f.rec != nil {
		f.rec.Note("the response's framing could not be followed (" + why + "): what follows is kept as it came")
	}
}

// trailers parses the trailer section followed, if any.
func (f *respFollow) trailers() http.Header {
	if f.st != fDone || len(f.trailer) == 0 {
		return nil
	}
	h, err := textproto.NewReader(headReader(f.trailer)).ReadMIMEHeader()
	if err != nil || len(h) == 0 {
		return nil
	}
	return http.Header(h)
}

// headReader reads a head kept whole: a reader no larger than it.
func headReader(b []byte) *bufio.Reader {
	return bufio.NewReaderSize(bytes.NewReader(b), len(b))
}

// followHeadMax bounds the final head a follower keeps.
const followHeadMax = 64 << 10

const (
	fHead      = iota // reading the final head
	fLength           // a body of left bytes
	fChunkSize        // a chunk size line's hex digits
	fChunkExt         // the rest of the size line, to its LF
	fChunkData        // left bytes of chunk data
	fChunkCRLF        // the CRLF after a chunk's data
	fTrailer          // the trailer section, to its empty line
	fClose            // a body that ends with the connection
	fDone             // the response ended
)

// feed reads the next bytes of the response and reports whether it ended
// (bytes after its end are not its own, and are not read).
func (f *respFollow) feed(b []byte) bool {
	_, done := f.read(b)
	return done
}

// read is feed, and says how many bytes of b were the response's.
func (f *respFollow) read(b []byte) (int, bool) {
	i := 0
	for i < len(b) && f.st != fDone {
		switch f.st {
		case fHead:
			end := -1
			for j, c := range b[i:] {
				if emptyLine(&f.line, c) {
					end = j + 1
					break
				}
			}
			if end < 0 {
				if len(f.head)+len(b)-i > followHeadMax {
					f.lost(fmt.Sprintf("a head larger than %d KiB", followHeadMax>>10))
					return len(b), false
				}
				f.head = append(f.head, b[i:]...)
				return len(b), false
			}
			f.head = append(f.head, b[i:i+end]...)
			i += end
			f.startBody()
		case fLength, fChunkData:
			k := int(min(f.left, int64(len(b)-i)))
			if f.rec != nil {
				f.rec.Body(b[i : i+k])
			}
			f.body += int64(k)
			f.left -= int64(k)
			i += k
			if f.left == 0 {
				if f.st == fLength {
					f.st = fDone
				} else {
					f.st, f.crlf = fChunkCRLF, 0
				}
			}
		case fChunkCRLF:
			if b[i] != "\r\n"[f.crlf] {
				f.lost("no CRLF after a chunk")
				continue
			}
			i++
			if f.crlf++; f.crlf == 2 {
				f.st, f.size, f.left, f.lineLen = fChunkSize, 0, 0, 0
			}
		case fChunkSize:
			c := b[i]
			if d, ok := hexDigit(c); ok && f.size < 16 {
				f.left = f.left<<4 | int64(d)
				f.size++
				f.lineLen++
				i++
				continue
			}
			if f.size == 0 || f.left < 0 {
				f.lost("a bad chunk size")
				continue
			}
			f.st, f.ext = fChunkExt, extNone
		case fChunkExt:
			c := b[i]
			if f.lineLen++; f.lineLen >= maxChunkLine {
				f.lost(fmt.Sprintf("a chunk size line of %d bytes or more", maxChunkLine))
				continue
			}
			switch {
			case f.ext&extCR != 0:
				if c != '\n' {
					f.lost("a CR inside a chunk size line")
					continue
				}
			case c == '\r':
				f.ext |= extCR
				i++
				continue
			case c == '\n':
				f.lost("a chunk size line ending in a bare LF")
				continue
			case f.ext == extParams:
				i++
				continue
			case c == ';' && f.ext == extNone:
				f.ext = extParams
				i++
				continue
			case c == ' ' || c == '\t':
				f.ext = extSpace
				i++
				continue
			default:
				f.lost("a bad chunk size line")
				continue
			}
			i++
			if f.left == 0 {
				f.st, f.line = fTrailer, lineStart
			} else {
				f.st = fChunkData
			}
		case fTrailer:
			if f.rec != nil && len(f.trailer) < followHeadMax {
				f.trailer = append(f.trailer, b[i])
			}
			if emptyLine(&f.line, b[i]) {
				f.st = fDone
			}
			i++
		case fClose:
			if f.rec != nil {
				f.rec.Body(b[i:])
			}
			f.body += int64(len(b) - i)
			return len(b), false
		}
	}
	return i, f.st == fDone
}

// startBody reads the final head (net/http's parser, on the bytes kept)
// for the status and how the body is framed.
func (f *respFollow) startBody() {
	req := &http.Request{Method: http.MethodGet}
	if f.headReq {
		req.Method = http.MethodHead
	}
	resp, err := http.ReadResponse(headReader(f.head), req)
	if cap(f.head) > 8<<10 {
		f.head = nil // a large head's buffer is not kept for the next
	}
	if err != nil {
		f.lost("a head net/http cannot read: " + err.Error())
		return
	}
	f.status = resp.StatusCode
	if f.rec != nil {
		// As the handler's proxy passes it on.
		tunnel.RemoveHopByHop(resp.Header)
		tunnel.AnnounceTrailers(resp.Header, resp.Trailer)
		f.rec.Response(resp.StatusCode, resp.Header)
	}
	switch {
	case resp.Body == http.NoBody:
		f.st = fDone
	case len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked":
		f.st, f.size, f.left, f.lineLen = fChunkSize, 0, 0, 0
	case resp.ContentLength > 0:
		f.st, f.left = fLength, resp.ContentLength
	case resp.ContentLength == 0:
		f.st = fDone
	default:
		f.st = fClose
	}
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
