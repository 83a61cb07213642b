// Command sseload is the load side of the e2e package's many-streams test
// and push benchmark: an SSE upstream, a crowd of SSE clients and a crowd of
// managed agents' push streams, each in a process of its own.
// Ten thousand streams need tens of thousands of goroutines and sockets;
// the race detector allows a process 8128 goroutines, and each process has
// its own file limit, so they cannot live in the test process.
//
//	sseload upstream [-interval 1s]
//	sseload clients -addr HOST:PORT -host HOST [-n 10000] [-concurrency 200] [-timeout 90s]
//	sseload push -addr HOST:PORT -tokens FILE [-concurrency 200] [-timeout 120s]
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
// "push" opens one push stream (GET /api/agent/push) per agent token in
// FILE (one secret a line) to the edge at addr, retrying failed attempts
// with backoff, waits for each stream's ": connected" and prints "ready N"
// (N streams connected). It then waits until every stream has received a
// config_changed event, prints a JSON summary (see pushSummary) of the
// delays from the event's sent_at to its arrival on one line, and holds the
// streams until its standard input closes.
//
// All three exit when their standard input closes, so they do not outlive
// the test that started them.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sseload upstream|clients|push [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "upstream":
		err = runUpstream(os.Args[2:])
	case "clients":
		err = runClients(os.Args[2:])
	case "push":
		err = runPush(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q: want upstream, clients or push", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sseload:", err)
		os.Exit(1)
	}
}
