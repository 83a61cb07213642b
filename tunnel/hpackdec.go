package tunnel

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// hpackDecoder is the HPACK decoder (RFC 7541) of both ends' header
// blocks, in place of x/net's. x/net's decoder makes a string of every
// literal name and value and hands each field to a callback, which x/net's
// framer appends to a slice grown field by field: about eleven
// allocations for a small request's or response's head, the most of any
// step of a request through the tunnel. This one decodes a whole block at
// once: the literals' bytes go into one buffer kept by the connection,
// which becomes one string, and the fields (their slice reused from block
// to block) refer to it or to the tables' strings.
//
// decode also makes the checks x/net's framer makes of each field as it
// is decoded (Framer.readMetaFrame), in the same order and with the same
// outcome: a value or name that is not valid, or a pseudo-header after a
// regular field, ends the head (invalid, a stream error); a head past the
// list's size ends it too (truncated). Fields after either are still
// decoded as far as the dynamic table needs, and no further, as x/net's
// decoder does with its emission off. TestHPACKDecoder and
// FuzzHPACKDecoder hold the two together.
type hpackDecoder struct {
	ents    []hpack.HeaderField // the dynamic table, oldest first
	size    uint32              // its entries' size (RFC 7541, section 4.1)
	max     uint32              // its maximum, as the peer last set it
	allowed uint32              // the most the peer may set: our SETTINGS_HEADER_TABLE_SIZE
	maxStr  int                 // the longest name or value taken, 0: any

	// the block being decoded
	text       []byte     // its literals
	refs       []hpackRef // its fields taken, in order
	fields     []hpack.HeaderField
	off        bool // a field was refused or past the budget: no more are taken
	sawRegular bool
	remain     [2]uint32 // what is left of the list's size for fields, for Trailer fields
	truncated  bool
	invalid    error
	marks      []hpackMark // decode's: one per bound
}

// hpackMark is the state of a block's decoding at the start of one of its
// CONTINUATION frames, as x/net's framer sees it there (having decoded the
// representations that ended before): what is left of the sizes for
// fields and for trailers, and whether a field was refused.
type hpackMark struct {
	remain  uint32
	refused bool
}

// hpackRef is one decoded field: its name and value from a table, or
// (litName, litValue) bytes of text.
type hpackRef struct {
	hf        hpack.HeaderField
	litName   bool
	litValue  bool
	sensitive bool
	name, val [2]int32 // text[name[0]:name[1]], text[val[0]:val[1]]
}

func newHPACKDecoder(allowed uint32, maxStr int) *hpackDecoder {
	return &hpackDecoder{max: allowed, allowed: allowed, maxStr: maxStr}
}

var (
	errHPACKIndex    = errors.New("hpack: invalid index")
	errHPACKTrunc    = errors.New("hpack: truncated header block")
	errHPACKVarint   = errors.New("hpack: varint integer overflow")
	errHPACKEncoding = errors.New("hpack: invalid encoding")
	errHPACKUpdate   = errors.New("hpack: dynamic table size update MUST occur at the beginning of a header block")
	errHPACKTooLarge = errors.New("hpack: dynamic table size update too large")

	errPseudoAfterRegular = errors.New("pseudo header field after regular")
)

// hpackHead is a decoded header block.
type hpackHead struct {
	fields    []hpack.HeaderField // valid until the next decode; their strings may be kept
	truncated bool                // past the list's size: fields holds those before
	invalid   error               // a field refused: fields holds those before
	marks     []hpackMark         // the state at each of decode's bounds
}

// decode decodes block, a whole header block, taking fields while their
// size (RFC 9113, section 6.5.2, with x/net's count for Trailer fields)
// is within maxList. An error is the peer's breach of HPACK (a
// connection error); it leaves the dynamic table as the fields before it
// made it.
//
// bounds are where in block the CONTINUATION frames that carried it began,
// in order; the head's marks are the state of the decoding at each, for
// readHead's checks of those frames.
func (d *hpackDecoder) decode(block []byte, maxList uint32, bounds []int) (hpackHead, error) {
	d.text = d.text[:0]
	d.refs = d.refs[:0]
	d.marks = d.marks[:0]
	d.off, d.sawRegular, d.truncated, d.invalid = false, false, false, nil
	d.remain = [2]uint32{maxList, maxList}
	state := func() hpackMark { return hpackMark{d.remain[0] + d.remain[1], d.invalid != nil} }
	first := true
	for rest := block; len(rest) > 0; {
		before := state()
		var err error
		rest, err = d.field(rest, first)
		if err != nil {
			return hpackHead{}, err
		}
		first = false
		// A bound inside this representation, or at its start, saw the
		// state before it.
		for end := len(block) - len(rest); len(d.marks) < len(bounds) && bounds[len(d.marks)] < end; {
			d.marks = append(d.marks, before)
		}
	}
	for len(d.marks) < len(bounds) {
		d.marks = append(d.marks, state())
	}
	s := string(d.text) // one allocation for every literal of the block
	d.fields = d.fields[:0]
	for i := range d.refs {
		r := &d.refs[i]
		hf := r.hf
		if r.litName {
			hf.Name = s[r.name[0]:r.name[1]]
		}
		if r.litValue {
			hf.Value = s[r.val[0]:r.val[1]]
		}
		hf.Sensitive = r.sensitive
		d.fields = append(d.fields, hf)
	}
	head := hpackHead{fields: d.fields, truncated: d.truncated, invalid: d.invalid, marks: d.marks}
	// One large block does not stay with the connection.
	if cap(d.text) > 64<<10 {
		d.text = nil
	}
	if cap(d.refs) > 256 {
		d.refs, d.fields = nil, nil
	}
	if cap(d.marks) > 256 {
		d.marks = nil
	}
	return head, nil
}

// field decodes the representation that opens b and returns what
// follows it.
func (d *hpackDecoder) field(b []byte, first bool) ([]byte, error) {
	c := b[0]
	switch {
	case c&0x80 != 0: // indexed (section 6.1)
		i, rest, err := hpackVarint(7, b)
		if err != nil {
			return nil, err
		}
		hf, ok := d.at(i)
		if !ok {
			return nil, fmt.Errorf("%w %d", errHPACKIndex, i)
		}
		if err := d.checkLen(len(hf.Name), len(hf.Value)); err != nil {
			return nil, err
		}
		d.take(hpackRef{hf: hpack.HeaderField{Name: hf.Name, Value: hf.Value}})
		return rest, nil
	case c&0xc0 == 0x40: // literal with incremental indexing (6.2.1)
		return d.literal(6, b, true, false)
	case c&0xf0 == 0x00: // literal without indexing (6.2.2)
		return d.literal(4, b, false, false)
	case c&0xf0 == 0x10: // literal never indexed (6.2.3)
		return d.literal(4, b, false, true)
	case c&0xe0 == 0x20: // dynamic table size update (6.3)
		if !first && d.size > 0 {
			return nil, errHPACKUpdate
		}
		v, rest, err := hpackVarint(5, b)
		if err != nil {
			return nil, err
		}
		if v > uint64(d.allowed) {
			return nil, errHPACKTooLarge
		}
		d.max = uint32(v)
		d.evict()
		return rest, nil
	}
	return nil, errHPACKEncoding
}

// literal decodes a literal field whose index prefix has n bits.
func (d *hpackDecoder) literal(n uint8, b []byte, index, sensitive bool) ([]byte, error) {
	i, b, err := hpackVarint(n, b)
	if err != nil {
		return nil, err
	}
	want := !d.off || index // the strings are needed
	mark := len(d.text)
	r := hpackRef{sensitive: sensitive}
	var name, val []byte
	if i > 0 {
		hf, ok := d.at(i)
		if !ok {
			return nil, fmt.Errorf("%w %d", errHPACKIndex, i)
		}
		r.hf.Name = hf.Name
	} else if name, b, err = d.str(b); err != nil {
		return nil, err
	}
	if val, b, err = d.str(b); err != nil {
		return nil, err
	}
	if !want {
		return b, d.checkLen(len(r.hf.Name), 0)
	}
	if i == 0 {
		r.litName = true
		if r.name, err = d.appendStr(name); err != nil {
			return nil, err
		}
	}
	r.litValue = true
	if r.val, err = d.appendStr(val); err != nil {
		return nil, err
	}
	nameLen := len(r.hf.Name)
	if r.litName {
		nameLen = int(r.name[1] - r.name[0])
	}
	if err := d.checkLen(nameLen, int(r.val[1]-r.val[0])); err != nil {
		return nil, err
	}
	if index {
		// The table's entry outlives the block: its strings are its own
		// (and text no longer holds them).
		if r.litName {
			r.hf.Name = string(d.text[r.name[0]:r.name[1]])
			r.litName = false
		}
		r.hf.Value = string(d.text[r.val[0]:r.val[1]])
		r.litValue = false
		d.text = d.text[:mark]
		d.add(r.hf)
	}
	d.take(r)
	return b, nil
}

// take keeps r unless fields are no longer taken, making x/net's
// framer's checks of it first: its value, its place (pseudo-headers
// first), its name, then the list's size.
func (d *hpackDecoder) take(r hpackRef) {
	if d.off {
		return
	}
	name, value := r.hf.Name, r.hf.Value
	var nameB, valueB []byte
	if r.litName {
		nameB = d.text[r.name[0]:r.name[1]]
	}
	if r.litValue {
		valueB = d.text[r.val[0]:r.val[1]]
	}
	var invalid error
	if (r.litValue && !validFieldValue(valueB)) || (!r.litValue && !validFieldValue(value)) {
		invalid = fmt.Errorf("invalid header field value for %q", d.show(r))
	}
	pseudo := (r.litName && len(nameB) > 0 && nameB[0] == ':') || (!r.litName && len(name) > 0 && name[0] == ':')
	if pseudo {
		if d.sawRegular {
			invalid = errPseudoAfterRegular
		}
	} else {
		d.sawRegular = true
		if (r.litName && !validWireName(nameB)) || (!r.litName && !validWireName(name)) {
			invalid = fmt.Errorf("invalid header field name %q", d.show(r))
		}
	}
	if invalid != nil {
		d.invalid, d.off = invalid, true
		return
	}
	nameLen, valueLen := len(name), len(value)
	if r.litName {
		nameLen = len(nameB)
	}
	if r.litValue {
		valueLen = len(valueB)
	}
	isTrailer := nameLen == len("trailer") && ((r.litName && string(nameB) == "trailer") || (!r.litName && name == "trailer"))
	remain, size := &d.remain[0], uint32(nameLen+valueLen+32)
	if isTrailer {
		count := 1
		for _, c := range valueB {
			if c == ',' {
				count++
			}
		}
		if !r.litValue {
			count = 1 + strings.Count(value, ",")
		}
		remain, size = &d.remain[1], uint32(valueLen-count+1)+uint32(count)*32
	}
	if size > *remain {
		d.truncated, d.off = true, true
		d.remain = [2]uint32{}
		return
	}
	*remain -= size
	d.refs = append(d.refs, r)
}

// show is r's name for an error.
func (d *hpackDecoder) show(r hpackRef) string {
	if r.litName {
		return string(d.text[r.name[0]:r.name[1]])
	}
	return r.hf.Name
}

// validFieldValue is httpguts.ValidHeaderFieldValue: no control byte
// but space and tab.
func validFieldValue[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validWireName is x/net's check of a regular field's name on the wire:
// a token of lower-case letters.
func validWireName[T string | []byte](v T) bool {
	if len(v) == 0 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 0x80 || !httpguts.IsTokenRune(rune(c)) || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// checkLen refuses a name or value longer than maxStr, as x/net's
// decoder does after decoding it.
func (d *hpackDecoder) checkLen(name, value int) error {
	if d.maxStr != 0 && (name > d.maxStr || value > d.maxStr) {
		return hpack.ErrStringLength
	}
	return nil
}

// str reads the string literal that opens b, its length checked against
// maxStr as x/net's decoder does before decoding it, and returns it as
// sent (its length's bytes with the Huffman flag, then its bytes) and
// what follows it.
func (d *hpackDecoder) str(b []byte) ([]byte, []byte, error) {
	n, rest, err := hpackVarint(7, b)
	if err != nil {
		return nil, nil, err
	}
	if d.maxStr != 0 && n > uint64(d.maxStr) {
		return nil, nil, hpack.ErrStringLength
	}
	if uint64(len(rest)) < n {
		return nil, nil, errHPACKTrunc
	}
	k := len(b) - len(rest) + int(n)
	return b[:k], b[k:], nil
}

// appendStr decodes literal s (as str returned it: its length's bytes,
// then its bytes) into text and returns where it is there.
func (d *hpackDecoder) appendStr(s []byte) ([2]int32, error) {
	huff := s[0]&0x80 != 0
	_, v, _ := hpackVarint(7, s)
	start := len(d.text)
	if huff {
		if _, err := hpack.HuffmanDecode((*hpackText)(d), v); err != nil {
			return [2]int32{}, err
		}
	} else {
		d.text = append(d.text, v...)
	}
	return [2]int32{int32(start), int32(len(d.text))}, nil
}

// hpackText lets hpack.HuffmanDecode append to the decoder's text.
type hpackText hpackDecoder

func (t *hpackText) Write(p []byte) (int, error) {
	t.text = append(t.text, p...)
	return len(p), nil
}

// at returns the field at index i of the static and dynamic tables
// (section 2.3.3).
func (d *hpackDecoder) at(i uint64) (hpack.HeaderField, bool) {
	switch {
	case i == 0:
		return hpack.HeaderField{}, false
	case i <= uint64(len(hpackStatic)):
		return hpackStatic[i-1], true
	case i-uint64(len(hpackStatic)) > uint64(len(d.ents)):
		return hpack.HeaderField{}, false
	}
	return d.ents[len(d.ents)-int(i-uint64(len(hpackStatic)))], true
}

// add adds hf to the dynamic table, evicting what it must (section 4.4;
// an entry larger than the table empties it and is not added).
func (d *hpackDecoder) add(hf hpack.HeaderField) {
	d.ents = append(d.ents, hf)
	d.size += hf.Size()
	d.evict()
}

// evict drops the oldest entries until the table fits its maximum.
func (d *hpackDecoder) evict() {
	n := 0
	for d.size > d.max && n < len(d.ents) {
		d.size -= d.ents[n].Size()
		n++
	}
	if n > 0 {
		k := copy(d.ents, d.ents[n:])
		clear(d.ents[k:])
		d.ents = d.ents[:k]
	}
}

// hpackVarint reads the integer with an n-bit prefix that opens p
// (section 5.1) and returns what follows it.
func hpackVarint(n uint8, p []byte) (uint64, []byte, error) {
	if len(p) == 0 {
		return 0, nil, errHPACKTrunc
	}
	i := uint64(p[0]) & (1<<n - 1)
	if i < 1<<n-1 {
		return i, p[1:], nil
	}
	p = p[1:]
	var m uint
	for len(p) > 0 {
		b := p[0]
		p = p[1:]
		i += uint64(b&0x7f) << m
		if b&0x80 == 0 {
			return i, p, nil
		}
		m += 7
		if m >= 63 {
			return 0, nil, errHPACKVarint
		}
	}
	return 0, nil, errHPACKTrunc
}

// hpackStatic is HPACK's static table (RFC 7541, appendix A).
var hpackStatic = [...]hpack.HeaderField{
	{Name: ":authority"},
	{Name: ":method", Value: "GET"},
	{Name: ":method", Value: "POST"},
	{Name: ":path", Value: "/"},
	{Name: ":path", Value: "/index.html"},
	{Name: ":scheme", Value: "http"},
	{Name: ":scheme", Value: "https"},
	{Name: ":status", Value: "200"},
	{Name: ":status", Value: "204"},
	{Name: ":status", Value: "206"},
	{Name: ":status", Value: "304"},
	{Name: ":status", Value: "400"},
	{Name: ":status", Value: "404"},
	{Name: ":status", Value: "500"},
	{Name: "accept-charset"},
	{Name: "accept-encoding", Value: "gzip, deflate"},
	{Name: "accept-language"},
	{Name: "accept-ranges"},
	{Name: "accept"},
	{Name: "access-control-allow-origin"},
	{Name: "age"},
	{Name: "allow"},
	{Name: "authorization"},
	{Name: "cache-control"},
	{Name: "content-disposition"},
	{Name: "content-encoding"},
	{Name: "content-language"},
	{Name: "content-length"},
	{Name: "content-location"},
	{Name: "content-range"},
	{Name: "content-type"},
	{Name: "cookie"},
	{Name: "date"},
	{Name: "etag"},
	{Name: "expect"},
	{Name: "expires"},
	{Name: "from"},
	{Name: "host"},
	{Name: "if-match"},
	{Name: "if-modified-since"},
	{Name: "if-none-match"},
	{Name: "if-range"},
	{Name: "if-unmodified-since"},
	{Name: "last-modified"},
	{Name: "link"},
	{Name: "location"},
	{Name: "max-forwards"},
	{Name: "proxy-authenticate"},
	{Name: "proxy-authorization"},
	{Name: "range"},
	{Name: "referer"},
	{Name: "refresh"},
	{Name: "retry-after"},
	{Name: "server"},
	{Name: "set-cookie"},
	{Name: "strict-transport-security"},
	{Name: "transfer-encoding"},
	{Name: "user-agent"},
	{Name: "vary"},
	{Name: "via"},
	{Name: "www-authenticate"},
}
