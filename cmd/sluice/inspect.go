package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/inspect"
)

// inspectPortTries: when --inspect is not given, the inspector takes the
// first free port of defaultInspect's and the next ones, this many in
// all, else any port on its host.
const inspectPortTries = 11

// inspectHelp is the paragraph of the agent commands' help about it.
const inspectHelp = `The inspector (on by default): a page and a JSON API on 127.0.0.1:4040,
or the next free port, printed at start, that show every request through
the tunnel with its headers and bodies, and the events, lines and messages
of SSE, NDJSON and WebSocket streams as they pass, and replay requests
(sluice replay ID). It runs in this process only, never on the edge.
`

// inspectFlags adds --inspect and --inspect-body-limit to fs: the agent
// commands' (http, agent, demo). Its open, after parsing, starts the
// inspector.
func inspectFlags(fs *flag.FlagSet) *inspectOptions {
	o := &inspectOptions{fs: fs, limit: inspect.DefaultBodyLimit}
	fs.StringVar(&o.addr, "inspect", defaultInspect,
		`address of the inspector, the local page and JSON API that show the requests through the tunnel, live, and replay them; "off" for none; when not given and the default's port is taken, the next free one`)
	fs.Var(&o.limit, "inspect-body-limit",
		"bytes the inspector keeps of each request and response body, and of each stream's events, lines or messages together; the rest is only counted (`SIZE`, such as 256KiB or 8MiB)")
	return o
}

// inspectOptions are the inspector's flags.
type inspectOptions struct {
	fs    *flag.FlagSet
	addr  string
	limit cli.Size
}

// inspector is a started inspector: its records and its listener, served
// by serve once the agent's handler exists. A nil *inspector is off.
type inspector struct {
	in *inspect.Inspector
	ln net.Listener
}

// open listens on the inspector's address and prints it on stdout; nil
// when --inspect off. Only the default address moves to the next free
// port when taken: an address given is used as it is, or refused.
func (o *inspectOptions) open(cmd string, stdout, stderr io.Writer) (*inspector, error) {
	given := false
	o.fs.Visit(func(f *flag.Flag) { given = given || f.Name == "inspect" })
	if o.addr == "off" {
		return nil, nil
	}
	if o.limit <= 0 {
		return nil, cli.Usagef("%s: --inspect-body-limit must be positive", cmd)
	}
	addr := o.addr
	defHost, defPort, _ := net.SplitHostPort(defaultInspect)
	if _, err := strconv.Atoi(addr); err == nil {
		addr = net.JoinHostPort(defHost, addr) // a port alone: on loopback
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, cli.Usagef(`%s: --inspect %q is not HOST:PORT (such as 127.0.0.1:4040) or "off"`, cmd, o.addr)
	}
	var ln net.Listener
	if given {
		ln, err = net.Listen("tcp", addr)
	} else {
		port, _ := strconv.Atoi(defPort)
		ln, err = listenFrom(defHost, port, inspectPortTries)
	}
	if err != nil {
		return nil, fmt.Errorf(`%s: the inspector: %w (give another --inspect address, or "off")`, cmd, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		fmt.Fprintf(stderr, "sluice: the inspector on %s is reachable from other machines: it shows every request's headers (Authorization, Cookie) and bodies\n", ln.Addr())
	}
	fmt.Fprintf(stdout, "Inspector  http://%s\n", ln.Addr())
	return &inspector{in: inspect.New(inspect.Config{BodyLimit: int64(o.limit)}), ln: ln}, nil
}

// listenFrom listens on the first free port of host's port..port+tries-1,
// else on any port.
func listenFrom(host string, port, tries int) (net.Listener, error) {
	for p := port; p < port+tries; p++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return ln, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
	}
	return net.Listen("tcp", net.JoinHostPort(host, "0"))
}

// line is the demo's line about it, "" when off.
func (i *inspector) line() string {
	if i == nil {
		return ""
	}
	return fmt.Sprintf("  Inspector:    http://%s/   (every request through the tunnel, live, with replay)\n", i.ln.Addr())
}

// inspector returns the records, nil when off.
func (i *inspector) inspector() *inspect.Inspector {
	if i == nil {
		return nil
	}
	return i.in
}

// serve serves the page and API until ctx ends, replays going to upstream
// (the agent's handler); wg waits for it. A nil inspector does nothing.
func (i *inspector) serve(ctx context.Context, wg *sync.WaitGroup, upstream http.Handler) {
	if i == nil {
		return
	}
	srv := &http.Server{Handler: i.in.Handler(inspect.HandlerConfig{Upstream: upstream}), ReadHeaderTimeout: 10 * time.Second}
	wg.Add(2)
	go func() {
		defer wg.Done()
		srv.Serve(i.ln) // returns when closed below
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		i.in.Close() // ends the live streams (/api/events)
		srv.Close()
	}()
}

// close releases an inspector that is not served (the command failed
// before).
func (i *inspector) close() {
	if i != nil {
		i.ln.Close()
		i.in.Close()
	}
}
