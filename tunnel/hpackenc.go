package tunnel

import (
	"bytes"
	"math"

	"golang.org/x/net/http2/hpack"
)

// hpackEncoder is the HPACK encoder (RFC 7541) of both ends' header blocks,
// in place of x/net's. x/net's encoder looks every field up in two tables
// of maps keyed by name and by name and value (up to four string hashes
// per field) and Huffman-codes each literal; on the edge that was 3-4 % of
// the CPU per small request, for header blocks that cross a loopback or
// a LAN. This one:
//
//   - indexes a field in the dynamic table only for a fixed set of names
//     whose values repeat from request to request on one connection (the
//     authority, the user agent, the forwarding fields, the content type,
//     the date...), and finds it again by comparing the last value sent
//     under that name: one comparison, no hash;
//   - never indexes credentials (Authorization, Cookie, Set-Cookie,
//     Proxy-Authorization, and any field marked Sensitive): they go as
//     never-indexed literals (RFC 7541, section 7.1.3), so that no field of
//     one visitor's request is ever referenced from another's;
//   - sends every other field as a literal without indexing, its name from
//     the static table when it is there, and no literal Huffman-coded
//     (decoding plain bytes is cheaper for the peer too).
//
// Its output is read by any HPACK decoder (TestHPACKEncoder and
// FuzzHPACKEncoder decode it with x/net's).
type hpackEncoder struct {
	w *bytes.Buffer

	max     uint32 // the dynamic table's maximum size in use
	minMax  uint32 // the smallest maximum set since the last size update sent
	update  bool   // a size update opens the next field written
	size    uint32 // the table's entries' size (RFC 7541, section 4.1)
	added   uint64 // entries added so far
	ents    []uint32
	entHead int                   // ents[entHead:] are the sizes of the live entries, oldest first
	slots   [hpackSlots]hpackSlot // the last value indexed under each indexable name
}

// hpackSlot is the entry last added under an indexable name.
type hpackSlot struct {
	value string
	seq   uint64 // its number among the entries added (from 1); 0: none
}

// hpackTableSize is the most the dynamic table holds: HTTP/2's default
// SETTINGS_HEADER_TABLE_SIZE, as x/net's encoder.
const hpackTableSize = 4096

// hpackMaxIndexed bounds an entry added to the table, so that one large
// value does not evict every other.
const hpackMaxIndexed = 512

func newHPACKEncoder(w *bytes.Buffer) *hpackEncoder {
	return &hpackEncoder{w: w, max: hpackTableSize, minMax: math.MaxUint32}
}

// SetMaxDynamicTableSizeLimit takes the peer's SETTINGS_HEADER_TABLE_SIZE:
// the table's maximum becomes the smaller of it and hpackTableSize, and
// the next header block opens with the size update(s) that say so.
func (e *hpackEncoder) SetMaxDynamicTableSizeLimit(v uint32) {
	v = min(v, hpackTableSize)
	if v == e.max {
		return
	}
	e.max = v
	e.minMax = min(e.minMax, v)
	e.update = true
	e.evict(0)
}

// evict drops the oldest entries until one of size n fits in max.
func (e *hpackEncoder) evict(n uint32) {
	for e.size+n > e.max && e.entHead < len(e.ents) {
		e.size -= e.ents[e.entHead]
		e.entHead++
	}
	if e.entHead == len(e.ents) {
		e.ents, e.entHead = e.ents[:0], 0
	} else if e.entHead > 64 && e.entHead > len(e.ents)/2 {
		n := copy(e.ents, e.ents[e.entHead:])
		e.ents, e.entHead = e.ents[:n], 0
	}
}

// live reports whether entry seq is still in the table, and its index.
func (e *hpackEncoder) live(seq uint64) (uint64, bool) {
	n := uint64(len(e.ents) - e.entHead)
	if seq == 0 || seq+n <= e.added {
		return 0, false
	}
	return 61 + e.added - seq + 1, true
}

// WriteField appends f's representation to the block.
func (e *hpackEncoder) WriteField(f hpack.HeaderField) {
	b := e.w.AvailableBuffer()
	if e.update {
		// RFC 7541, section 4.2: the current maximum; if it was smaller
		// in between, a smaller one first. That one is 0, which empties
		// both tables: x/net's decoder takes a second update only when
		// its table is empty.
		e.update = false
		if e.minMax < e.max {
			b = appendHPACKInt(b, 5, 0x20, 0)
			e.size, e.ents, e.entHead = 0, e.ents[:0], 0
		}
		b = appendHPACKInt(b, 5, 0x20, uint64(e.max))
		e.minMax = math.MaxUint32
	}
	e.w.Write(e.appendField(b, f))
}

func (e *hpackEncoder) appendField(b []byte, f hpack.HeaderField) []byte {
	if i := hpackStaticPair(f.Name, f.Value); i > 0 {
		return appendHPACKInt(b, 7, 0x80, uint64(i))
	}
	name := hpackStaticName(f.Name)
	if f.Sensitive || hpackSecret(f.Name) {
		return appendHPACKLiteral(b, 4, 0x10, name, f)
	}
	slot := hpackSlotOf(f.Name)
	if slot < 0 {
		return appendHPACKLiteral(b, 4, 0x00, name, f)
	}
	s := &e.slots[slot]
	if s.value == f.Value {
		if i, ok := e.live(s.seq); ok {
			return appendHPACKInt(b, 7, 0x80, i)
		}
	}
	n := uint32(len(f.Name) + len(f.Value) + 32)
	if n > hpackMaxIndexed || n > e.max {
		return appendHPACKLiteral(b, 4, 0x00, name, f)
	}
	e.evict(n)
	e.ents = append(e.ents, n)
	e.size += n
	e.added++
	s.value, s.seq = f.Value, e.added
	return appendHPACKLiteral(b, 6, 0x40, name, f)
}

// appendHPACKLiteral appends a literal field: its name by static index
// (name > 0) or as a string, then its value, neither Huffman-coded.
func appendHPACKLiteral(b []byte, prefix uint8, first byte, name uint8, f hpack.HeaderField) []byte {
	b = appendHPACKInt(b, prefix, first, uint64(name))
	if name == 0 {
		b = appendHPACKString(b, f.Name)
	}
	return appendHPACKString(b, f.Value)
}

func appendHPACKString(b []byte, s string) []byte {
	b = appendHPACKInt(b, 7, 0x00, uint64(len(s)))
	return append(b, s...)
}

// appendHPACKInt appends i with an N-bit prefix (RFC 7541, section 5.1),
// the first byte's high bits from first.
func appendHPACKInt(b []byte, n uint8, first byte, i uint64) []byte {
	k := uint64(1)<<n - 1
	if i < k {
		return append(b, first|byte(i))
	}
	b = append(b, first|byte(k))
	i -= k
	for i >= 128 {
		b = append(b, byte(i&0x7f|0x80))
		i >>= 7
	}
	return append(b, byte(i))
}

// hpackSecret reports the fields never indexed: credentials.
func hpackSecret(name string) bool {
	switch name {
	case "authorization", "proxy-authorization", "cookie", "set-cookie":
		return true
	}
	return false
}

// hpackSlots is the number of indexable names (hpackSlotOf).
const hpackSlots = 20

// hpackSlotOf returns the slot of a name whose values repeat from one
// request or response to the next on a connection, or -1.
func hpackSlotOf(name string) int {
	switch name {
	case ":authority":
		return 0
	case ":method":
		return 1
	case ":path":
		return 2
	case ":status":
		return 3
	case "user-agent":
		return 4
	case "accept":
		return 5
	case "accept-encoding":
		return 6
	case "accept-language":
		return 7
	case "x-forwarded-for":
		return 8
	case "x-forwarded-host":
		return 9
	case "x-forwarded-proto":
		return 10
	case "content-type":
		return 11
	case "content-length":
		return 12
	case "cache-control":
		return 13
	case "date":
		return 14
	case "server":
		return 15
	case "vary":
		return 16
	case "origin":
		return 17
	case "referer":
		return 18
	case "te":
		return 19
	}
	return -1
}

// hpackStaticPair returns the static table's index of name and value
// together (RFC 7541, appendix A), or 0.
func hpackStaticPair(name, value string) uint8 {
	switch name {
	case ":method":
		switch value {
		case "GET":
			return 2
		case "POST":
			return 3
		}
	case ":path":
		switch value {
		case "/":
			return 4
		case "/index.html":
			return 5
		}
	case ":scheme":
		switch value {
		case "http":
			return 6
		case "https":
			return 7
		}
	case ":status":
		switch value {
		case "200":
			return 8
		case "204":
			return 9
		case "206":
			return 10
		case "304":
			return 11
		case "400":
			return 12
		case "404":
			return 13
		case "500":
			return 14
		}
	case "accept-encoding":
		if value == "gzip, deflate" {
			return 16
		}
	}
	return 0
}

// hpackStaticName returns the static table's first index of name (RFC
// 7541, appendix A), or 0.
func hpackStaticName(name string) uint8 {
	switch name {
	case ":authority":
		return 1
	case ":method":
		return 2
	case ":path":
		return 4
	case ":scheme":
		return 6
	case ":status":
		return 8
	case "accept-charset":
		return 15
	case "accept-encoding":
		return 16
	case "accept-language":
		return 17
	case "accept-ranges":
		return 18
	case "accept":
		return 19
	case "access-control-allow-origin":
		return 20
	case "age":
		return 21
	case "allow":
		return 22
	case "authorization":
		return 23
	case "cache-control":
		return 24
	case "content-disposition":
		return 25
	case "content-encoding":
		return 26
	case "content-language":
		return 27
	case "content-length":
		return 28
	case "content-location":
		return 29
	case "content-range":
		return 30
	case "content-type":
		return 31
	case "cookie":
		return 32
	case "date":
		return 33
	case "etag":
		return 34
	case "expect":
		return 35
	case "expires":
		return 36
	case "from":
		return 37
	case "host":
		return 38
	case "if-match":
		return 39
	case "if-modified-since":
		return 40
	case "if-none-match":
		return 41
	case "if-range":
		return 42
	case "if-unmodified-since":
		return 43
	case "last-modified":
		return 44
	case "link":
		return 45
	case "location":
		return 46
	case "max-forwards":
		return 47
	case "proxy-authenticate":
		return 48
	case "proxy-authorization":
		return 49
	case "range":
		return 50
	case "referer":
		return 51
	case "refresh":
		return 52
	case "retry-after":
		return 53
	case "server":
		return 54
	case "set-cookie":
		return 55
	case "strict-transport-security":
		return 56
	case "transfer-encoding":
		return 57
	case "user-agent":
		return 58
	case "vary":
		return 59
	case "via":
		return 60
	case "www-authenticate":
		return 61
	}
	return 0
}
