package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// pprofFlag adds --pprof ADDR to a server command: Go's profiler endpoints
// (/debug/pprof/...) on a listener of their own, never on the public one.
func pprofFlag(fs *flag.FlagSet) *string {
	return fs.String("pprof", "", "serve Go's profiler (/debug/pprof/) on this address, such as 127.0.0.1:6060 (off by default)")
}

// startPprof serves the profiler on addr until ctx ends.
func startPprof(ctx context.Context, addr string, stderr io.Writer) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	context.AfterFunc(ctx, func() { srv.Close() })
	fmt.Fprintf(stderr, "profiler on http://%s/debug/pprof/\n", ln.Addr())
	return nil
}
