package wire

import (
	"encoding/json"
	"strconv"
	"testing"
)

// jsonFrame is the chunk frame as encoding/json would handle it: the
// baseline the hand-written codec is measured against.
type jsonFrame struct {
	Type      string `json:"type"`
	RequestID string `json:"request_id"`
	Data      []byte `json:"data_b64"` // encoding/json writes []byte as base64
}

var chunkSizes = []int{1 << 10, 32 << 10, 256 << 10}

func BenchmarkChunkEncode(b *testing.B) {
	for _, size := range chunkSizes {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i)
		}
		b.Run("wire/"+strconv.Itoa(size), func(b *testing.B) {
			f := Frame{Type: TypeHTTPResponseChunk, RequestID: "1234", Data: data}
			var buf []byte
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				buf = AppendFrame(buf[:0], &f, EncodeOptions{})
			}
		})
		b.Run("encoding-json/"+strconv.Itoa(size), func(b *testing.B) {
			f := jsonFrame{Type: TypeHTTPResponseChunk, RequestID: "1234", Data: data}
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := json.Marshal(&f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkChunkDecode(b *testing.B) {
	for _, size := range chunkSizes {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i)
		}
		enc := AppendFrame(nil, &Frame{Type: TypeHTTPResponseChunk, RequestID: "1234", Data: data}, EncodeOptions{})
		b.Run("wire/"+strconv.Itoa(size), func(b *testing.B) {
			var f Frame
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if err := Decode(enc, &f); err != nil || len(f.Data) != size {
					b.Fatal(err)
				}
			}
		})
		b.Run("encoding-json/"+strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				var f jsonFrame
				if err := json.Unmarshal(enc, &f); err != nil || len(f.Data) != size {
					b.Fatal(err)
				}
			}
		})
	}
}
