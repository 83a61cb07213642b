package agent

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
		switch {
		case c == '\n' && s.st != midLine:
			s.info, s.n = false, 0 // the head ended; the next starts at i
		case c == '\n':
			s.st = lineStart
		case c == '\r' && s.st == lineStart:
			s.st = crAtStart
		default:
			s.st = midLine
		}
	}
	return 0, false
}

// reset readies the scan for the next request's answer.
func (s *headScan) reset() { *s = headScan{} }

// informational reports whether p, a head's first statusPrefix bytes, is
// the status line of a 1xx response other than 101 (which switches
// protocols: the final answer).
func informational(p []byte) bool {
	return string(p[:len("HTTP/1.")]) == "HTTP/1." && p[7] >= '0' && p[7] <= '9' && p[8] == ' ' &&
		p[9] == '1' && isDigit(p[10]) && isDigit(p[11]) && string(p[9:12]) != "101"
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
