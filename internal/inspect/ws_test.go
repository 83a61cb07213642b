package inspect

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// frame encodes one WebSocket frame: op with fin and rsv1, the payload
// masked with key when key is not nil, its length in the shortest form
// unless long asks for the 64-bit one.
func frame(fin, rsv1 bool, op byte, payload []byte, key []byte, long bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	if rsv1 {
		b0 |= 0x40
	}
	var b1 byte
	if key != nil {
		b1 = 0x80
	}
	out := []byte{b0}
	n := len(payload)
	switch {
	case long:
		out = append(out, b1|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	case n < 126:
		out = append(out, b1|byte(n))
	case n < 1<<16:
		out = append(out, b1|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, b1|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if key != nil {
		out = append(out, key...)
		for i, c := range payload {
			out = append(out, c^key[i%4])
		}
		return out
	}
	return append(out, payload...)
}

// decodeAll decodes data in pieces of at most step bytes (0: at once).
func decodeAll(data []byte, step, limit int, deflate bool) ([]wsMessage, error) {
	var got []wsMessage
	d := newWSDecoder(limit, deflate, func(m wsMessage) {
		m.Payload = append([]byte(nil), m.Payload...) // the decoder may reuse nothing, but be sure
		if len(m.Payload) == 0 {
			m.Payload = nil
		}
		got = append(got, m)
	})
	if step <= 0 {
		step = len(data) + 1
	}
	var err error
	for len(data) > 0 && err == nil {
		n := min(step, len(data))
		err = d.Write(data[:n])
		data = data[n:]
	}
	return got, err
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var key = []byte{0x37, 0xfa, 0x21, 0x3d}

// wsCase is a decoder table case; they seed FuzzWSDecoder too.
type wsCase struct {
	name    string
	data    []byte
	limit   int
	deflate bool
	want    []wsMessage
	err     error
}

func wsCases() []wsCase {
	big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80,000 bytes: a 64-bit length
	mid := bytes.Repeat([]byte("x"), 300)                 // a 16-bit length
	return []wsCase{
		{"unmasked text", frame(true, false, wsText, []byte("Hello"), nil, false), 100, false,
			[]wsMessage{{Opcode: wsText, Size: 5, Payload: []byte("Hello")}}, nil},
		{"masked text (RFC 6455 5.7)", []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}, 100, false,
			[]wsMessage{{Opcode: wsText, Size: 5, Payload: []byte("Hello")}}, nil},
		{"fragmented (RFC 6455 5.7)", []byte{0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f}, 100, false,
			[]wsMessage{{Opcode: wsText, Size: 5, Payload: []byte("Hello")}}, nil},
		{"16-bit length, masked binary", frame(true, false, wsBinary, mid, key, false), 1000, false,
			[]wsMessage{{Opcode: wsBinary, Size: 300, Payload: mid}}, nil},
		{"64-bit length cut at the limit", frame(true, false, wsBinary, big, key, false), 1000, false,
			[]wsMessage{{Opcode: wsBinary, Size: 80000, Payload: big[:1000], Truncated: true}}, nil},
		{"64-bit form of a short length", frame(true, false, wsText, []byte("hi"), nil, true), 100, false,
			[]wsMessage{{Opcode: wsText, Size: 2, Payload: []byte("hi")}}, nil},
		{"ping between fragments, masked", cat(
			frame(false, false, wsText, []byte("one "), key, false),
			frame(true, false, wsPing, []byte("p"), key, false),
			frame(false, false, wsContinuation, []byte("two "), key, false),
			frame(true, false, wsContinuation, []byte("three"), key, false),
			frame(true, false, wsClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}, key, false)), 100, false,
			[]wsMessage{
				{Opcode: wsPing, Size: 1, Payload: []byte("p")},
				{Opcode: wsText, Size: 13, Payload: []byte("one two three")},
				{Opcode: wsClose, Size: 5, Payload: []byte{0x03, 0xe8, 'b', 'y', 'e'}},
			}, nil},
		{"fragments cut at the limit", cat(
			frame(false, false, wsBinary, []byte("abcdef"), key, false),
			frame(true, false, wsContinuation, []byte("ghij"), key, false)), 8, false,
			[]wsMessage{{Opcode: wsBinary, Size: 10, Payload: []byte("abcdefgh"), Truncated: true}}, nil},
		{"empty frames", cat(frame(true, false, wsText, nil, nil, false), frame(true, false, wsPong, nil, key, false)), 10, false,
			[]wsMessage{{Opcode: wsText}, {Opcode: wsPong}}, nil},
		{"compressed", cat(
			frame(false, true, wsText, []byte{1, 2, 3}, key, false),
			frame(true, false, wsContinuation, []byte{4, 5}, key, false)), 100, true,
			[]wsMessage{{Opcode: wsText, Size: 5, Compressed: true}}, nil},
		{"RSV1 without deflate", frame(true, true, wsText, []byte("x"), nil, false), 100, false, nil, errWSReserved},
		{"RSV1 on a continuation", cat(
			frame(false, true, wsText, []byte("x"), nil, false),
			frame(true, true, wsContinuation, []byte("y"), nil, false)), 100, true, nil, errWSReserved},
		{"RSV2", []byte{0xA1, 0x00}, 100, true, nil, errWSReserved},
		{"reserved opcode", []byte{0x83, 0x00}, 100, false, nil, errWSOpcode},
		{"reserved control opcode", []byte{0x8B, 0x00}, 100, false, nil, errWSOpcode},
		{"fragmented ping", []byte{0x09, 0x00}, 100, false, nil, errWSControl},
		{"long ping", frame(true, false, wsPing, make([]byte, 126), nil, false), 100, false, nil, errWSControl},
		{"continuation first", frame(true, false, wsContinuation, []byte("x"), nil, false), 100, false, nil, errWSContinuation},
		{"interleaved messages", cat(frame(false, false, wsText, []byte("x"), nil, false), frame(true, false, wsText, []byte("y"), nil, false)), 100, false, nil, errWSInterleaved},
		{"length over 2^63", []byte{0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0}, 100, false, nil, errWSLength},
		{"messages before an error are kept", cat(frame(true, false, wsText, []byte("ok"), nil, false), []byte{0x83, 0x00}), 100, false,
			[]wsMessage{{Opcode: wsText, Size: 2, Payload: []byte("ok")}}, errWSOpcode},
	}
}

func TestWSDecoder(t *testing.T) {
	for _, tt := range wsCases() {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{0, 1, 2, 3, 7, 64} {
				got, err := decodeAll(tt.data, step, tt.limit, tt.deflate)
				if !errors.Is(err, tt.err) {
					t.Fatalf("step %d: error %v, want %v", step, err, tt.err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("step %d:\n got %+v\nwant %+v", step, got, tt.want)
				}
			}
		})
	}
}

// FuzzWSDecoder: any input, in any pieces, decodes to the same messages and
// the same error as in one piece, within the limit, without a panic; and a
// message encoded from the input, fragmented and masked, decodes to itself.
func FuzzWSDecoder(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}, uint16(3), false)
	f.Add([]byte{0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f}, uint16(1), false)
	f.Add(cat(frame(false, true, wsText, []byte{1, 2, 3}, key, false), frame(true, false, wsContinuation, []byte{4}, key, false)), uint16(5), true)
	f.Add(frame(true, false, wsBinary, bytes.Repeat([]byte{7}, 300), key, false), uint16(100), false)
	for i, c := range wsCases() {
		f.Add(c.data, uint16(i), c.deflate)
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16, deflate bool) {
		const limit = 64
		whole, werr := decodeAll(data, 0, limit, deflate)
		step := int(split%17) + 1
		pieces, perr := decodeAll(data, step, limit, deflate)
		if !errors.Is(perr, werr) || !reflect.DeepEqual(whole, pieces) {
			t.Fatalf("in one piece: %+v, %v; in pieces of %d: %+v, %v", whole, werr, step, pieces, perr)
		}
		for _, m := range whole {
			if len(m.Payload) > max(limit, 125) || (m.Opcode < wsClose && !m.Compressed && m.Truncated != (int64(len(m.Payload)) < m.Size)) {
				t.Fatalf("message %+v: payload %d bytes, limit %d", m, len(m.Payload), limit)
			}
		}

		// Round trip: data as one binary message, in fragments of split
		// bytes (at least one), masked with data's first bytes.
		var k []byte
		if len(data) >= 4 {
			k = data[:4]
		}
		frag := int(split%300) + 1
		var enc []byte
		for i := 0; ; i += frag {
			end := min(i+frag, len(data))
			op := byte(wsContinuation)
			if i == 0 {
				op = wsBinary
			}
			enc = append(enc, frame(end == len(data), false, op, data[i:end], k, false)...)
			if end == len(data) {
				break
			}
		}
		got, err := decodeAll(enc, step, 1<<20, false)
		want := []wsMessage{{Opcode: wsBinary, Size: int64(len(data)), Payload: data}}
		if len(data) == 0 {
			want[0].Payload = nil
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip of %d bytes in fragments of %d: %+v, %v", len(data), frag, got, err)
		}
	})
}
