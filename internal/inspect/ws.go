package inspect

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// WebSocket frames (RFC 6455, section 5.2), as the capture reads them off
// an upgraded connection, one direction per decoder.

// Opcodes.
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xA
)

// wsOpcodeName is an opcode as Item.Opcode shows it.
func wsOpcodeName(op byte) string {
	switch op {
	case wsText:
		return "text"
	case wsBinary:
		return "binary"
	case wsClose:
		return "close"
	case wsPing:
		return "ping"
	case wsPong:
		return "pong"
	}
	return fmt.Sprintf("0x%x", op)
}

// Errors that stop the decoding of a direction.
var (
	errWSReserved      = errors.New("inspect: websocket: reserved bits set without an extension that uses them")
	errWSOpcode        = errors.New("inspect: websocket: reserved opcode")
	errWSControl       = errors.New("inspect: websocket: fragmented or oversized control frame")
	errWSContinuation  = errors.New("inspect: websocket: continuation frame outside a message")
	errWSInterleaved   = errors.New("inspect: websocket: new message before the last one ended")
	errWSLength        = errors.New("inspect: websocket: frame length over 2^63")
	errWSMessageTooBig = errors.New("inspect: websocket: message over 2^62 bytes")
)

// wsMessage is one decoded message: a data message (text or binary) with
// its fragments joined, or a control frame.
type wsMessage struct {
	Opcode byte
	Size   int64 // payload bytes, all fragments
	// Payload is the (unmasked) payload, at most the decoder's limit;
	// Truncated says it is cut. A compressed message (permessage-deflate)
	// has no payload here: it is not inflated.
	Payload    []byte
	Truncated  bool
	Compressed bool
}

// wsDecoder decodes the frames of one direction of a WebSocket from bytes
// given in any pieces (Write), and calls emit for each message: data
// messages once their last fragment has passed, control frames as they
// pass (between fragments too). After an error it decodes nothing more
// and Write returns the error. It holds at most limit bytes of a message
// and 125 of a control frame. It is not safe for concurrent use.
type wsDecoder struct {
	limit   int
	deflate bool // permessage-deflate was negotiated: RSV1 marks a compressed message
	emit    func(wsMessage)
	err     error

	// The frame header being read: hdr[:hn] of need bytes.
	hdr  [14]byte
	hn   int
	need int

	// The frame whose payload is being read.
	inPayload bool
	fin       bool
	opcode    byte
	masked    bool
	key       [4]byte
	left      uint64 // payload bytes still to come
	pos       uint64 // payload bytes passed, for the mask

	// The data message in progress (across fragments).
	inMessage bool
	msg       wsMessage
	ctl       []byte // the control frame's payload
}

func newWSDecoder(limit int, deflate bool, emit func(wsMessage)) *wsDecoder {
	return &wsDecoder{limit: limit, deflate: deflate, emit: emit, need: 2}
}

// Write decodes p, and returns the error that stopped decoding, if any.
func (d *wsDecoder) Write(p []byte) error {
	for len(p) > 0 && d.err == nil {
		if d.inPayload {
			p = d.payload(p)
			continue
		}
		n := copy(d.hdr[d.hn:d.need], p)
		d.hn += n
		p = p[n:]
		if d.hn == d.need {
			d.err = d.header()
		}
	}
	return d.err
}

// header reads hdr[:hn]: when it is complete, it starts the frame's
// payload; else it says how many bytes more it needs.
func (d *wsDecoder) header() error {
	b0, b1 := d.hdr[0], d.hdr[1]
	need := 2
	switch b1 & 0x7F {
	case 126:
		need += 2
	case 127:
		need += 8
	}
	if b1&0x80 != 0 {
		need += 4
	}
	if d.hn < need {
		d.need = need
		return nil
	}
	fin, rsv, op := b0&0x80 != 0, b0&0x70, b0&0x0F
	var length uint64
	switch b1 & 0x7F {
	case 126:
		length = uint64(binary.BigEndian.Uint16(d.hdr[2:4]))
	case 127:
		length = binary.BigEndian.Uint64(d.hdr[2:10])
		if length>>63 != 0 {
			return errWSLength
		}
	default:
		length = uint64(b1 & 0x7F)
	}
	d.masked = b1&0x80 != 0
	if d.masked {
		copy(d.key[:], d.hdr[need-4:need])
	}
	control := op&0x8 != 0
	switch {
	case op > wsBinary && op < wsClose || op > wsPong:
		return errWSOpcode
	case rsv&0x30 != 0, rsv&0x40 != 0 && (!d.deflate || control || op == wsContinuation):
		// RSV1 is permessage-deflate's, on a message's first frame only.
		return errWSReserved
	case control && (!fin || length > 125):
		return errWSControl
	case op == wsContinuation && !d.inMessage:
		return errWSContinuation
	case !control && op != wsContinuation && d.inMessage:
		return errWSInterleaved
	}
	if !control && op != wsContinuation {
		d.inMessage = true
		d.msg = wsMessage{Opcode: op, Compressed: rsv&0x40 != 0}
	}
	if !control && uint64(d.msg.Size)+length > 1<<62 {
		return errWSMessageTooBig
	}
	d.fin, d.opcode, d.left, d.pos = fin, op, length, 0
	d.hn, d.need = 0, 2
	d.ctl = d.ctl[:0]
	d.inPayload = true
	if length == 0 {
		d.endFrame()
	}
	return nil
}

// payload takes the current frame's payload bytes from p and returns the
// rest.
func (d *wsDecoder) payload(p []byte) []byte {
	n := uint64(len(p))
	if n > d.left {
		n = d.left
	}
	chunk := p[:n]
	if d.opcode&0x8 != 0 {
		d.ctl = d.unmask(d.ctl, chunk)
	} else {
		d.msg.Size += int64(n)
		if room := d.limit - len(d.msg.Payload); !d.msg.Compressed && room > 0 {
			keep := chunk[:min(uint64(room), n)]
			d.msg.Payload = d.unmask(d.msg.Payload, keep)
			d.pos += n - uint64(len(keep)) // unmask advanced pos by len(keep)
		} else {
			d.pos += n
		}
		if !d.msg.Compressed && int64(len(d.msg.Payload)) < d.msg.Size {
			d.msg.Truncated = true
		}
	}
	d.left -= n
	if d.left == 0 {
		d.endFrame()
	}
	return p[n:]
}

// unmask appends src to dst, unmasked with the frame's key.
func (d *wsDecoder) unmask(dst, src []byte) []byte {
	start := len(dst)
	dst = append(dst, src...)
	if d.masked {
		for i := start; i < len(dst); i++ {
			dst[i] ^= d.key[d.pos&3]
			d.pos++
		}
	} else {
		d.pos += uint64(len(src))
	}
	return dst
}

// endFrame finishes the current frame: a control frame is emitted, a data
// message when this was its last fragment.
func (d *wsDecoder) endFrame() {
	d.inPayload = false
	if d.opcode&0x8 != 0 {
		d.emit(wsMessage{Opcode: d.opcode, Size: int64(len(d.ctl)), Payload: d.ctl})
		d.ctl = nil // given away
		return
	}
	if d.fin {
		d.inMessage = false
		m := d.msg
		d.msg = wsMessage{}
		d.emit(m)
	}
}
