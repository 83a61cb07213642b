package benchmark

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/internal/stats"
)

// GRPCConfig says what the gRPC run measures: a gRPC server (grpc-go's
// interop TestService, over h2c) reached directly and through sluice.
type GRPCConfig struct {
	// Protocols are the sluice protocols measured after direct, in order
	// (nil: v1 and v2).
	Protocols []string
	// SluiceBin is the sluice binary run as the edge and the agent.
	SluiceBin string
	// Callers is the number of concurrent unary callers, all on one
	// ClientConn (0: 50).
	Callers int
	// Streams is the number of concurrent server-streaming calls, on the
	// same ClientConn (0: 1).
	Streams int
	// MessageSize is the payload of each streamed message (0: 1 KiB; at
	// most 1 MiB).
	MessageSize int
	// Batch is the number of messages of each server-streaming call (0:
	// 1,000).
	Batch int
	// Duration is the length of each measured phase, unary and streaming,
	// for each target (0: 10 s); each is preceded by a warm-up of a fifth
	// of it, at most 500 ms.
	Duration time.Duration
	// Progress, if set, receives one line per step.
	Progress io.Writer
}

const (
	grpcUnarySize  = 100     // payload bytes of each unary request and response
	grpcMaxMessage = 1 << 20 // the largest MessageSize (grpc-go receives at most 4 MiB)
	grpcCeiling    = time.Minute
)

func (c *GRPCConfig) defaults() error {
	if c.Protocols == nil {
		c.Protocols = []string{"v1", "v2"}
	}
	if c.Callers == 0 {
		c.Callers = 50
	}
	if c.Streams == 0 {
		c.Streams = 1
	}
	if c.MessageSize == 0 {
		c.MessageSize = 1 << 10
	}
	if c.Batch == 0 {
		c.Batch = 1000
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	switch {
	case c.Callers < 0 || c.Streams < 0 || c.Batch < 0 || c.Duration < 0:
		return errors.New("benchmark: grpc: callers, streams, batch and duration must not be negative")
	case c.MessageSize < 0 || c.MessageSize > grpcMaxMessage:
		return fmt.Errorf("benchmark: grpc: the message size must be between 1 and %d bytes", grpcMaxMessage)
	case len(c.Protocols) > 0 && c.SluiceBin == "":
		return errors.New("benchmark: grpc: no sluice binary")
	}
	for _, p := range c.Protocols {
		if p != "v1" && p != "v2" {
			return fmt.Errorf("benchmark: grpc: unknown protocol %q (want v1 or v2)", p)
		}
	}
	return nil
}

// GRPCReport is the outcome of a gRPC run. Its JSON form is "bench grpc
// --json".
type GRPCReport struct {
	Env         Env          `json:"env"`
	GRPCVersion string       `json:"grpc_version"`
	Callers     int          `json:"callers"`
	UnaryBytes  int          `json:"unary_bytes"`
	Streams     int          `json:"streams"`
	Batch       int          `json:"messages_per_call"`
	MessageSize int          `json:"message_bytes"`
	DurationS   float64      `json:"duration_s"`
	Targets     []GRPCResult `json:"targets"`
}

// GRPCResult is one target's figures ("direct", "sluice-v1",
// "sluice-v2"). Error is set when a measurement failed; the figures
// measured before it are kept.
type GRPCResult struct {
	Name   string       `json:"name"`
	Unary  *GRPCUnary   `json:"unary"`
	Stream *GRPCStreams `json:"stream"`
	Error  string       `json:"error,omitempty"`
}

// GRPCUnary is the unary run: Callers callers making UnaryCall back to
// back, each call's latency measured.
type GRPCUnary struct {
	Callers     int     `json:"callers"`
	Calls       int64   `json:"calls"`
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"calls_per_s"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
}

// GRPCStreams is the server-streaming run: Streams callers making
// StreamingOutputCall back to back, each call answered with Batch messages
// of MessageSize bytes.
type GRPCStreams struct {
	Streams     int     `json:"streams"`
	Batch       int     `json:"messages_per_call"`
	Calls       int64   `json:"calls"`
	Messages    int64   `json:"messages"`
	Seconds     float64 `json:"seconds"`
	MsgsPerSec  float64 `json:"messages_per_s"`
	MBps        float64 `json:"mb_per_s"` // payload, 10^6 bytes per second
	CallP50Ms   float64 `json:"call_p50_ms"`
	MessageSize int     `json:"message_bytes"`
}

// GRPC measures gRPC calls to a gRPC server in this process (grpc-go's
// interop TestService, plain TCP with HTTP/2 prior knowledge: h2c),
// directly and then through an edge and an agent ("sluice http
// h2c://127.0.0.1:PORT") for each protocol, in one run: unary calls per
// second from Callers callers on one ClientConn, and server-streaming
// messages per second from Streams calls at a time. A public client
// reaches the edge's plain listener with h2c prior knowledge. Every
// answer's size is checked; a failure is reported with its target and the
// other targets still run.
func GRPC(ctx context.Context, cfg GRPCConfig) (*GRPCReport, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	up, err := startGRPCUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	rep := &GRPCReport{
		Env:         Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
		GRPCVersion: grpc.Version,
		Callers:     cfg.Callers,
		UnaryBytes:  grpcUnarySize,
		Streams:     cfg.Streams,
		Batch:       cfg.Batch,
		MessageSize: cfg.MessageSize,
		DurationS:   cfg.Duration.Seconds(),
	}
	var failed []string
	for _, name := range append([]string{"direct"}, prefixAll("sluice-", cfg.Protocols)...) {
		if ctx.Err() != nil {
			break
		}
		res, err := grpcTarget(ctx, cfg, up, name)
		if err != nil {
			res.Error = err.Error()
			first, _, _ := strings.Cut(res.Error, "\n")
			failed = append(failed, name+": "+first)
			logf(cfg.Progress, "%s: FAILED: %v", name, err)
		}
		rep.Targets = append(rep.Targets, res)
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("benchmark: grpc: interrupted: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("benchmark: grpc failed: %s", strings.Join(failed, "; "))
	}
	return rep, nil
}

func prefixAll(prefix string, list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = prefix + s
	}
	return out
}

// grpcTarget starts a target (nothing for direct), measures it and stops
// it.
func grpcTarget(ctx context.Context, cfg GRPCConfig, up *grpcUpstream, name string) (res GRPCResult, err error) {
	res.Name = name
	logf(cfg.Progress, "%s: starting", name)
	addr, authority := up.addr(), ""
	var t *procTarget
	if proto, ok := strings.CutPrefix(name, "sluice-"); ok {
		if t, err = startSluiceTo(ctx, cfg.SluiceBin, "h2c://"+up.addr(), proto, 1024, 1024, ""); err != nil {
			return res, err
		}
		defer func() {
			if stopErr := t.stop(); stopErr != nil && err == nil {
				err = stopErr
			}
		}()
		addr, authority = strings.TrimPrefix(t.baseURL(), "http://"), t.host()
	}
	fail := func(what string, err error) (GRPCResult, error) {
		err = fmt.Errorf("%s: %w", what, err)
		if t != nil {
			if out := t.output(); out != "" {
				err = fmt.Errorf("%w\n%s output:\n%s", err, name, out)
			}
		}
		return res, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return res, err
	}
	defer cc.Close()
	c := testgrpc.NewTestServiceClient(cc)
	if err := waitGRPC(ctx, c, t); err != nil {
		return fail("the first call", err)
	}

	if res.Unary, err = grpcUnary(ctx, cfg, c); err != nil {
		return fail("unary calls", err)
	}
	u := res.Unary
	logf(cfg.Progress, "%s: unary: %d callers, %d calls in %.1f s: %.0f calls/s, p50 %s ms, p99 %s ms",
		name, u.Callers, u.Calls, u.Seconds, u.CallsPerSec, ms(u.P50Ms), ms(u.P99Ms))
	if res.Stream, err = grpcStream(ctx, cfg, c); err != nil {
		return fail("server streaming", err)
	}
	s := res.Stream
	logf(cfg.Progress, "%s: server streaming: %d stream(s), %d calls of %d messages of %s in %.1f s: %.0f messages/s, %.0f MB/s",
		name, s.Streams, s.Calls, s.Batch, byteSize(int64(s.MessageSize)), s.Seconds, s.MsgsPerSec, s.MBps)
	if t != nil {
		if err := t.alive(); err != nil {
			return fail("after the run", err)
		}
	}
	return res, nil
}

// waitGRPC makes EmptyCall until one succeeds, for up to readyTimeout:
// the agent may not have registered yet. t, if set, is the target whose
// processes must stay alive meanwhile.
func waitGRPC(ctx context.Context, c testgrpc.TestServiceClient, t *procTarget) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if t != nil {
			if err := t.alive(); err != nil {
				return err
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.EmptyCall(cctx, &testgrpc.Empty{})
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %v: %w", readyTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// grpcUnary runs Callers callers making UnaryCall back to back for
// Duration, each request and answer carrying grpcUnarySize bytes.
func grpcUnary(ctx context.Context, cfg GRPCConfig, c testgrpc.TestServiceClient) (*GRPCUnary, error) {
	lat, secs, err := closedLoop(ctx, cfg.Callers, cfg.Duration, func() func(context.Context) error {
		req := &testgrpc.SimpleRequest{ResponseSize: grpcUnarySize, Payload: &testgrpc.Payload{Body: make([]byte, grpcUnarySize)}}
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, grpcCeiling)
			defer cancel()
			resp, err := c.UnaryCall(ctx, req)
			if err != nil {
				return fmt.Errorf("UnaryCall: %w", err)
			}
			if n := len(resp.GetPayload().GetBody()); n != grpcUnarySize {
				return fmt.Errorf("UnaryCall: %d bytes of payload, want %d", n, grpcUnarySize)
			}
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	sum := stats.Summarize(lat)
	return &GRPCUnary{
		Callers:     cfg.Callers,
		Calls:       int64(sum.N),
		Seconds:     secs,
		CallsPerSec: float64(sum.N) / secs,
		P50Ms:       durMs(sum.P50),
		P99Ms:       durMs(sum.P99),
	}, nil
}

// grpcStream runs Streams callers making StreamingOutputCall back to back
// for Duration, each call answered with Batch messages of MessageSize
// bytes, all counted and checked.
func grpcStream(ctx context.Context, cfg GRPCConfig, c testgrpc.TestServiceClient) (*GRPCStreams, error) {
	req := &testgrpc.StreamingOutputCallRequest{}
	for range cfg.Batch {
		req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{Size: int32(cfg.MessageSize)})
	}
	lat, secs, err := closedLoop(ctx, cfg.Streams, cfg.Duration, func() func(context.Context) error {
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, grpcCeiling)
			defer cancel()
			stream, err := c.StreamingOutputCall(ctx, req)
			if err != nil {
				return fmt.Errorf("StreamingOutputCall: %w", err)
			}
			for got := 0; ; got++ {
				msg, err := stream.Recv()
				if err == io.EOF {
					if got != cfg.Batch {
						return fmt.Errorf("StreamingOutputCall: %d messages, want %d", got, cfg.Batch)
					}
					return nil
				}
				if err != nil {
					return fmt.Errorf("StreamingOutputCall: after %d messages: %w", got, err)
				}
				if n := len(msg.GetPayload().GetBody()); n != cfg.MessageSize {
					return fmt.Errorf("StreamingOutputCall: message %d has %d bytes of payload, want %d", got, n, cfg.MessageSize)
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	sum := stats.Summarize(lat)
	msgs := int64(sum.N) * int64(cfg.Batch)
	return &GRPCStreams{
		Streams:     cfg.Streams,
		Batch:       cfg.Batch,
		Calls:       int64(sum.N),
		Messages:    msgs,
		Seconds:     secs,
		MsgsPerSec:  float64(msgs) / secs,
		MBps:        float64(msgs) * float64(cfg.MessageSize) / secs / 1e6,
		CallP50Ms:   durMs(sum.P50),
		MessageSize: cfg.MessageSize,
	}, nil
}

// grpcUpstream is a gRPC server inside the benchmark process, on a
// loopback port, speaking h2c (grpc-go's server takes HTTP/2 with prior
// knowledge on a plain listener).
type grpcUpstream struct {
	srv  *grpc.Server
	ln   net.Listener
	done chan struct{}
}

func startGRPCUpstream() (*grpcUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &grpcUpstream{srv: grpc.NewServer(), ln: ln, done: make(chan struct{})}
	testgrpc.RegisterTestServiceServer(u.srv, &testService{body: make([]byte, grpcMaxMessage)})
	go func() {
		defer close(u.done)
		u.srv.Serve(ln)
	}()
	return u, nil
}

func (u *grpcUpstream) addr() string { return u.ln.Addr().String() }

// close stops the server, ending the calls in progress, and waits for it.
func (u *grpcUpstream) close() {
	u.srv.Stop()
	<-u.done
}

// testService implements the interop TestService's EmptyCall, UnaryCall
// and StreamingOutputCall with the sizes asked for (a response
// parameter's interval is not honoured: messages go as fast as they can).
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	body []byte // zeros to slice payloads from, never written
}

func (*testService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (s *testService) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	body, err := s.payload(req.GetResponseSize())
	if err != nil {
		return nil, err
	}
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: body}}, nil
}

func (s *testService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	for _, p := range req.GetResponseParameters() {
		body, err := s.payload(p.GetSize())
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *testService) payload(size int32) ([]byte, error) {
	if size < 0 || int(size) > len(s.body) {
		return nil, status.Errorf(codes.InvalidArgument, "payload size %d out of range [0, %d]", size, len(s.body))
	}
	return s.body[:size], nil
}

// WriteTable prints the report as a table with a column per target, each
// figure with its ratio to direct's.
func (r *GRPCReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice bench grpc: grpc-go %s TestService over h2c; loopback, %d CPUs, %s %s/%s\n",
		r.GRPCVersion, r.Env.CPUs, r.Env.GoVersion, r.Env.OS, r.Env.Arch)
	fmt.Fprintf(&b, "unary: %d callers on one connection, %d B each way; server streaming: %d call(s) at a time of %d messages of %s; %gs per phase\n\n",
		r.Callers, r.UnaryBytes, r.Streams, r.Batch, byteSize(int64(r.MessageSize)), r.DurationS)
	var direct *GRPCResult
	for i := range r.Targets {
		if r.Targets[i].Name == "direct" {
			direct = &r.Targets[i]
		}
	}
	unary := func(f func(*GRPCUnary) float64) func(*GRPCResult) (float64, bool) {
		return func(t *GRPCResult) (float64, bool) {
			if t.Unary == nil {
				return 0, false
			}
			return f(t.Unary), true
		}
	}
	stream := func(f func(*GRPCStreams) float64) func(*GRPCResult) (float64, bool) {
		return func(t *GRPCResult) (float64, bool) {
			if t.Stream == nil {
				return 0, false
			}
			return f(t.Stream), true
		}
	}
	whole := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	rows := []ratioRow[GRPCResult]{
		{fmt.Sprintf("unary calls/s (%d callers)", r.Callers), unary(func(u *GRPCUnary) float64 { return u.CallsPerSec }), whole},
		{"unary latency p50 ms", unary(func(u *GRPCUnary) float64 { return u.P50Ms }), ms},
		{"unary latency p99 ms", unary(func(u *GRPCUnary) float64 { return u.P99Ms }), ms},
		{fmt.Sprintf("streamed messages/s (%s each)", byteSize(int64(r.MessageSize))), stream(func(s *GRPCStreams) float64 { return s.MsgsPerSec }), whole},
		{"streamed MB/s", stream(func(s *GRPCStreams) float64 { return s.MBps }), whole},
	}
	writeRatioTable(&b, r.Targets, func(t *GRPCResult) string { return t.Name }, direct, rows,
		func(t *GRPCResult, _ string) string {
			if t.Error != "" {
				return "failed"
			}
			return "-"
		})
	b.WriteString("\n(×: the figure over direct's. Higher is better for calls/s, messages/s and MB/s, lower for ms.)\n")
	for _, t := range r.Targets {
		if t.Error != "" {
			first, _, _ := strings.Cut(t.Error, "\n")
			fmt.Fprintf(&b, "%s FAILED: %s\n", t.Name, first)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
