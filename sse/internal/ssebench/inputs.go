// Package ssebench builds the event streams that sluice's SSE benchmarks
// parse and encode: sse/bench_test.go and the comparison against other
// libraries in sse/bench/ssecompare use the same inputs through it. It lives
// in the sse module so that the module's benchmarks need nothing else.
package ssebench

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/sse"
)

// Input is one workload: a stream of events and the events it holds.
type Input struct {
	Name      string
	Events    []sse.Event
	Stream    []byte // the events' wire form
	DataBytes int    // sum of len(Data) over Events
}

// Spec describes an Input: N events of DataSize bytes of data, in lines of
// LineLen bytes (0: one line).
type Spec struct {
	Name                 string
	N, DataSize, LineLen int
}

// Specs returns the workloads: small events, 1 KiB, 64 KiB and 1 MiB events
// as one data line each, and 64 KiB and 1 MiB events as 64-byte data lines.
// Every event has an id and an event type.
func Specs() []Spec {
	return []Spec{
		{"small", 10000, 60, 0},
		{"1KiB", 2000, 1 << 10, 0},
		{"64KiB", 64, 64 << 10, 0},
		{"64KiB-multiline", 64, 64 << 10, 64},
		{"1MiB", 8, 1 << 20, 0},
		{"1MiB-multiline", 8, 1 << 20, 64},
	}
}

// Build builds the Input.
func (s Spec) Build() *Input { return Make(s.Name, s.N, s.DataSize, s.LineLen) }

// Make builds n events whose Data is dataSize bytes of ASCII; if lineLen > 0,
// every lineLen-th byte of Data is a line feed, so the event is written as
// data lines of lineLen-1 bytes.
func Make(name string, n, dataSize, lineLen int) *Input {
	const alphabet = `{"k":"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}`
	data := make([]byte, dataSize)
	for i := range data {
		data[i] = alphabet[i%len(alphabet)]
		if lineLen > 0 && (i+1)%lineLen == 0 && i != len(data)-1 {
			data[i] = '\n'
		}
	}
	in := &Input{Name: name}
	var w bytes.Buffer
	for i := range n {
		ev := sse.Event{ID: strconv.Itoa(i + 1), Type: "tick", Data: string(data)}
		in.Events = append(in.Events, ev)
		in.DataBytes += len(ev.Data)
		fmt.Fprintf(&w, "id: %s\nevent: %s\n", ev.ID, ev.Type)
		for line := range strings.SplitSeq(ev.Data, "\n") {
			fmt.Fprintf(&w, "data: %s\n", line)
		}
		w.WriteByte('\n')
	}
	in.Stream = w.Bytes()
	return in
}
