// Command sseload is the load side of the e2e package's many-streams test:
// an SSE upstream and a crowd of SSE clients, each in a process of its own.
// Ten thousand streams need tens of thousands of goroutines and sockets;
// the race detector allows a process 8128 goroutines, and each process has
// its own file limit, so they cannot live in the test process.
//
//	sseload upstream [-interval 1s]
//	sseload clients -addr HOST:PORT -host HOST [-n 10000] [-concurrency 200] [-timeout 90s]
//
// "upstream" serves GET /events, an event stream that receives an event
// every interval (its data: the send time in Unix nanoseconds), and GET
// /stats, the number of streams open, as JSON. It prints "listening ADDR"
// once it listens.
//
// "clients" opens n streams to http://HOST/events through addr, retrying
// failed attempts with backoff, waits until every stream has its response
// headers and then until every stream has received an event sent after
// that, and prints a JSON summary (see summary) on one line. It holds the
// streams open until its standard input closes.
//
// Both exit when their standard input closes, so they do not outlive the
// test that started them.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sseload upstream|clients [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "upstream":
		err = runUpstream(os.Args[2:])
	case "clients":
		err = runClients(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q: want upstream or clients", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sseload:", err)
		os.Exit(1)
	}
}
