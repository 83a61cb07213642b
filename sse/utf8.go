package sse

import "unicode/utf8"

// appendDecoded appends src to dst decoded as the WHATWG Encoding standard's
// UTF-8 decoder does it: each maximal subpart of an ill-formed sequence
// becomes one U+FFFD, and an incomplete sequence at the end of src becomes
// one U+FFFD.
//
// The parser calls it on whole lines (or on the parts of a line split at an
// ASCII ':' or ' '), which gives the same result as decoding the whole stream
// first: the decoder emits U+FFFD for an unfinished sequence when it meets an
// ASCII byte, exactly as it does at the end of input, and an ASCII byte is
// never part of a multi-byte sequence.
func appendDecoded(dst, src []byte) []byte {
	if utf8.Valid(src) {
		return append(dst, src...)
	}
	var (
		cp     rune
		needed int
		seen   int
		lower  byte = 0x80
		upper  byte = 0xBF
	)
	for i := 0; i < len(src); {
		b := src[i]
		if needed == 0 {
			switch {
			case b < 0x80:
				// ASCII run: copy as much as possible at once.
				j := i + 1
				for j < len(src) && src[j] < 0x80 {
					j++
				}
				dst = append(dst, src[i:j]...)
				i = j
				continue
			case b >= 0xC2 && b <= 0xDF:
				needed, cp = 1, rune(b&0x1F)
			case b >= 0xE0 && b <= 0xEF:
				if b == 0xE0 {
					lower = 0xA0
				} else if b == 0xED {
					upper = 0x9F
				}
				needed, cp = 2, rune(b&0x0F)
			case b >= 0xF0 && b <= 0xF4:
				if b == 0xF0 {
					lower = 0x90
				} else if b == 0xF4 {
					upper = 0x8F
				}
				needed, cp = 3, rune(b&0x07)
			default:
				dst = utf8.AppendRune(dst, utf8.RuneError)
			}
			i++
			continue
		}
		if b < lower || b > upper {
			// Ill-formed: emit U+FFFD and process b again from the start
			// state (the standard's "prepend byte to stream").
			cp, needed, seen, lower, upper = 0, 0, 0, 0x80, 0xBF
			dst = utf8.AppendRune(dst, utf8.RuneError)
			continue
		}
		lower, upper = 0x80, 0xBF
		cp = cp<<6 | rune(b&0x3F)
		seen++
		i++
		if seen == needed {
			dst = utf8.AppendRune(dst, cp)
			cp, needed, seen = 0, 0, 0
		}
	}
	if needed != 0 {
		dst = utf8.AppendRune(dst, utf8.RuneError)
	}
	return dst
}

// decodeString returns b decoded as appendDecoded does, as a string.
func decodeString(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return string(appendDecoded(nil, b))
}
