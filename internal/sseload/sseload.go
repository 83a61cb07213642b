// Package sseload is the load side of the many-stream runs: an SSE
// upstream, a crowd of SSE clients and a crowd of managed agents' push
// streams, each meant to run in a process of its own (Main). The bench
// command runs it as "bench sseload MODE" for its scale run, the e2e tests
// as the small e2e/internal/sseload command. Ten thousand streams need tens
// of thousands of goroutines and sockets; the race detector allows a
// process 8128 goroutines, and each process has its own file limit, so they
// cannot live in a test process.
//
//	upstream [-interval 1s]
//	clients -addr HOST:PORT -host HOST [-n 10000] [-concurrency 200] [-timeout 90s]
//	push -addr HOST:PORT -tokens FILE [-concurrency 200] [-timeout 120s]
//
// "upstream" serves GET /events, an event stream that receives an event
// every interval (its data: the send time in Unix nanoseconds), and GET
// /stats, the number of streams open, as JSON. It prints "listening ADDR"
// once it listens.
//
// "clients" opens n streams to http://HOST/events through addr, retrying
// failed attempts with backoff, waits until every stream has its response
// headers and then until every stream has received an event sent after
// that, and prints a JSON summary (see Summary) on one line. It holds the
// streams open until its standard input closes.
//
// "push" opens one push stream (GET /api/agent/push) per agent token in
// FILE (one secret a line) to the edge at addr, retrying failed attempts
// with backoff, waits for each stream's ": connected" and prints "ready N"
// (N streams connected). It then waits until every stream has received a
// config_changed event, prints a JSON summary (see PushSummary) of the
// delays from the event's sent_at to its arrival on one line, and holds the
// streams until its standard input closes.
//
// All three exit when their standard input closes, so they do not outlive
// whoever started them.
package sseload

import "fmt"

// Main runs the mode args[0] with the flags that follow, printing on
// standard output and holding until standard input closes.
func Main(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("sseload: want a mode: upstream, clients or push")
	}
	switch args[0] {
	case "upstream":
		return runUpstream(args[1:])
	case "clients":
		return runClients(args[1:])
	case "push":
		return runPush(args[1:])
	}
	return fmt.Errorf("sseload: unknown mode %q: want upstream, clients or push", args[0])
}
