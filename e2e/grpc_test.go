package e2e

// gRPC through the tunnel: a grpc-go server on loopback (h2c, or TLS for
// the https:// upstream test), "sluice http h2c://..." in front of it, and
// grpc-go clients that reach it through NAME.localhost over the plain edge
// (h2c with prior knowledge) and over a TLS edge (h2 through ALPN).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcService is the grpc_testing TestService, with what the tests need
// to see at the upstream: each call tagged with an "x-call" metadata value
// reports when its handler started and when its context ended (and
// whether a grpc-timeout gave it a deadline).
type grpcService struct {
	testgrpc.UnimplementedTestServiceServer
	mu    sync.Mutex
	calls map[string]*grpcCall
}

type grpcCall struct {
	started     chan struct{} // closed when the handler runs
	ended       chan struct{} // closed when the handler's context ended
	hadDeadline bool          // the handler's context had a deadline (grpc-timeout)
	err         error         // its context's error, once ended is closed
}

// callIDs numbers the tagged calls: an id is never reused (a test's
// address, once used for this, was: a finished subtest's memory went to
// the next one, and its call found the first one's record closed).
var callIDs atomic.Int64

// call returns the record of the call tagged id, created on first use by
// the handler or the test, whichever comes first.
func (s *grpcService) call(id string) *grpcCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[id]
	if c == nil {
		c = &grpcCall{started: make(chan struct{}), ended: make(chan struct{})}
		s.calls[id] = c
	}
	return c
}

// UnaryCall echoes the payload, or answers req.ResponseStatus with a
// custom trailer and no message (a trailers-only response).
func (s *grpcService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("x-upstream", "grpc-test"))
	if st := req.GetResponseStatus(); st != nil {
		grpc.SetTrailer(ctx, metadata.Pairs("x-detail", "custom trailer"))
		return nil, status.Error(codes.Code(st.Code), st.Message)
	}
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

// EmptyCall waits for its context to end and records it: the calls that
// test deadlines and cancellation.
func (s *grpcService) EmptyCall(ctx context.Context, _ *testgrpc.Empty) (*testgrpc.Empty, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c := s.call(strings.Join(md.Get("x-call"), ""))
	_, c.hadDeadline = ctx.Deadline()
	close(c.started)
	<-ctx.Done()
	c.err = ctx.Err()
	close(c.ended)
	return nil, ctx.Err()
}

// StreamingOutputCall sends one message per response parameter, of its
// size, then ends with req.ResponseStatus (and a custom trailer) if set.
func (s *grpcService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	for i, p := range req.GetResponseParameters() {
		body := make([]byte, p.GetSize())
		for j := range body {
			body[j] = byte(i)
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
	if st := req.GetResponseStatus(); st != nil {
		stream.SetTrailer(metadata.Pairs("x-detail", "after messages"))
		return status.Error(codes.Code(st.Code), st.Message)
	}
	return nil
}

// StreamingInputCall answers, once the request stream ends, with the
// total size of the payloads received.
func (s *grpcService) StreamingInputCall(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	var n int32
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: n})
		}
		if err != nil {
			return err
		}
		n += int32(len(req.GetPayload().GetBody()))
	}
}

// FullDuplexCall answers each request at once with its payload, while the
// request stream stays open.
func (s *grpcService) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// startGRPCServer serves a grpcService on a loopback port (h2c without
// opts, TLS with grpc.Creds) until the test ends.
func startGRPCServer(t *testing.T, opts ...grpc.ServerOption) (*grpcService, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := &grpcService{calls: map[string]*grpcCall{}}
	srv := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(srv, svc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return svc, ln.Addr().(*net.TCPAddr).Port
}

// startHTTPAgent runs "sluice http UPSTREAM --edge EDGE --token T --name
// NAME --protocol PROTO" and extra flags, with env added to its
// environment, and waits for its "Forwarding PUBLIC -> UPSTREAM" line.
func startHTTPAgent(t *testing.T, edgeURL, public, proto, name, upstream string, env []string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"http", upstream, "--edge", edgeURL, "--token", "T", "--name", name, "--protocol", proto}, extra...)
	p := startProcEnv(t, "agent "+name, env, args...)
	want := fmt.Sprintf("Forwarding %s -> %s\n", public, upstream)
	if !p.waitOutput(p.stdout, want, 15*time.Second) {
		t.Fatalf("agent %s never printed %q (exited: %v, %v)\nstdout: %s\nstderr: %s", name, want, p.exited(), p.err, p.stdout, p.stderr)
	}
	return p
}

// grpcClient connects to authority (NAME.localhost:PORT, its :authority
// and TLS server name) through the edge at edgeAddr.
func grpcClient(t *testing.T, edgeAddr, authority string, creds credentials.TransportCredentials) testgrpc.TestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+authority,
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", edgeAddr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// The gRPC calls through the tunnel, over both edge listeners: a plain one
// (h2c with prior knowledge) and a TLS one (h2), each with its own agent
// of the same h2c upstream.
func TestGRPC(t *testing.T) { forProtocols(t, testGRPC) }

func testGRPC(t *testing.T, proto string) {
	svc, port := startGRPCServer(t)
	upstream := fmt.Sprintf("h2c://127.0.0.1:%d", port)
	certFile, keyFile, pool := selfSigned(t)
	plain := startEdge(t, "T")
	secure := startEdge(t, "T", "--tls-cert", certFile, "--tls-key", keyFile)
	startHTTPAgent(t, "http://"+plain.addr, plain.publicURL("grpc"), proto, "grpc", upstream, nil)
	startHTTPAgent(t, "https://"+secure.addr, fmt.Sprintf("https://grpc.localhost:%d", secure.port), proto, "grpc", upstream,
		[]string{"SSL_CERT_FILE=" + certFile})
	for _, l := range []struct {
		name   string
		client testgrpc.TestServiceClient
	}{
		{"plain edge h2c", grpcClient(t, plain.addr, fmt.Sprintf("grpc.localhost:%d", plain.port), insecure.NewCredentials())},
		{"TLS edge h2", grpcClient(t, secure.addr, fmt.Sprintf("grpc.localhost:%d", secure.port), credentials.NewTLS(&tls.Config{RootCAs: pool}))},
	} {
		t.Run(l.name, func(t *testing.T) { testGRPCCalls(t, svc, l.client) })
	}

	// A local server that resets the stream (RST_STREAM) after its
	// response head and part of a message: the client sees the reset, not
	// a clean end of the stream (which gives "unexpected EOF").
	t.Run("upstream reset", func(t *testing.T) {
		resetPort := startResettingUpstream(t)
		startHTTPAgent(t, "http://"+plain.addr, plain.publicURL("grpc-reset"), proto, "grpc-reset", fmt.Sprintf("h2c://127.0.0.1:%d", resetPort), nil)
		client := grpcClient(t, plain.addr, fmt.Sprintf("grpc-reset.localhost:%d", plain.port), insecure.NewCredentials())
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if st := status.Convert(err); st.Code() != codes.Internal || !strings.Contains(st.Message(), "RST_STREAM") {
			t.Errorf("a call the upstream reset: %v, want Internal naming RST_STREAM", err)
		}
	})
}

// startResettingUpstream serves h2c on a loopback port until the test ends:
// every request gets a gRPC response head and half a message, then its
// stream is reset (net/http sends RST_STREAM for http.ErrAbortHandler).
func startResettingUpstream(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte{0, 0, 0, 0, 10, 1, 2}) // a 10-byte message, cut short
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// testGRPCCalls runs each kind of call through client to svc.
func testGRPCCalls(t *testing.T, svc *grpcService, client testgrpc.TestServiceClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		body := randomBytes(t, 100<<10)
		var hdr metadata.MD
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}}, grpc.Header(&hdr))
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		if string(resp.GetPayload().GetBody()) != string(body) {
			t.Errorf("UnaryCall echoed %d bytes, want the %d sent", len(resp.GetPayload().GetBody()), len(body))
		}
		if got := hdr.Get("x-upstream"); len(got) != 1 || got[0] != "grpc-test" {
			t.Errorf("response header x-upstream = %q, want grpc-test", got)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		req := &testgrpc.StreamingOutputCallRequest{}
		for _, size := range []int32{1, 10, 100 << 10, 0, 3} {
			req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{Size: size})
		}
		stream, err := client.StreamingOutputCall(ctx, req)
		if err != nil {
			t.Fatalf("StreamingOutputCall: %v", err)
		}
		for i, p := range req.ResponseParameters {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if b := m.GetPayload().GetBody(); int32(len(b)) != p.Size || (len(b) > 0 && b[0] != byte(i)) {
				t.Fatalf("message %d: %d bytes, want %d of %d", i, len(b), p.Size, i)
			}
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after the messages: %v, want io.EOF (status OK)", err)
		}
	})

	t.Run("client streaming", func(t *testing.T) {
		stream, err := client.StreamingInputCall(ctx)
		if err != nil {
			t.Fatalf("StreamingInputCall: %v", err)
		}
		want := int32(0)
		for _, size := range []int{3, 64 << 10, 0, 1} {
			if err := stream.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, size)}}); err != nil {
				t.Fatalf("send %d bytes: %v", size, err)
			}
			want += int32(size)
		}
		resp, err := stream.CloseAndRecv()
		if err != nil || resp.GetAggregatedPayloadSize() != want {
			t.Fatalf("CloseAndRecv: %v %v, want %d bytes received", resp, err, want)
		}
	})

	t.Run("bidi ping-pong", func(t *testing.T) {
		// Each answer must come back while the request stream is open:
		// request and response bodies stream at the same time.
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatalf("FullDuplexCall: %v", err)
		}
		for i := range 10 {
			ping := fmt.Sprintf("ping %d", i)
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(ping)}}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("answer %d: %v", i, err)
			}
			if got := string(m.GetPayload().GetBody()); got != ping {
				t.Fatalf("answer %d: %q, want %q", i, got, ping)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after CloseSend: %v, want io.EOF (status OK)", err)
		}
	})

	t.Run("error status, trailers only", func(t *testing.T) {
		var trailer metadata.MD
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "not yet: é ✓"}},
			grpc.Trailer(&trailer))
		if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != "not yet: é ✓" {
			t.Fatalf("UnaryCall: %v, want FailedPrecondition %q", err, "not yet: é ✓")
		}
		if got := trailer.Get("x-detail"); len(got) != 1 || got[0] != "custom trailer" {
			t.Errorf("trailer x-detail = %q, want %q (trailers %v)", got, "custom trailer", trailer)
		}
	})

	t.Run("error status after messages", func(t *testing.T) {
		stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
			ResponseParameters: []*testgrpc.ResponseParameters{{Size: 5}, {Size: 7}},
			ResponseStatus:     &testgrpc.EchoStatus{Code: int32(codes.ResourceExhausted), Message: "quota"},
		})
		if err != nil {
			t.Fatalf("StreamingOutputCall: %v", err)
		}
		for i := range 2 {
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		_, err = stream.Recv()
		if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != "quota" {
			t.Fatalf("after the messages: %v, want ResourceExhausted %q", err, "quota")
		}
		if got := stream.Trailer().Get("x-detail"); len(got) != 1 || got[0] != "after messages" {
			t.Errorf("trailer x-detail = %q, want %q (trailers %v)", got, "after messages", stream.Trailer())
		}
	})

	t.Run("deadline", func(t *testing.T) {
		// The client's deadline travels as grpc-timeout and becomes the
		// handler's; a deadline so short that the call never reached the
		// handler proves nothing, so it is tried again, longer.
		for timeout := time.Second; ; timeout *= 2 {
			id := fmt.Sprintf("deadline-%d", callIDs.Add(1))
			c := svc.call(id)
			dctx, dcancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-call", id), timeout)
			_, err := client.EmptyCall(dctx, &testgrpc.Empty{})
			dcancel()
			// The client's timer, or the local server's at the same
			// deadline: the server resets the call (CANCEL) and the agent
			// answers 504 "Deadline exceeded", which a gRPC client reads
			// as Unavailable; which one comes first is the machine's.
			if st := status.Convert(err); st.Code() != codes.DeadlineExceeded &&
				!(st.Code() == codes.Unavailable && strings.Contains(st.Message(), "504") && strings.Contains(st.Message(), "Deadline exceeded")) {
				t.Fatalf("EmptyCall with a %v deadline: %v, want DeadlineExceeded", timeout, err)
			}
			select {
			case <-c.started:
			default:
				if timeout >= 16*time.Second {
					t.Fatal("the call never reached the upstream before its deadline")
				}
				t.Logf("the call did not reach the upstream within %v; trying a longer deadline", timeout)
				continue
			}
			waitClosed(t, c.ended, "the handler's context to end")
			if !c.hadDeadline {
				t.Error("the handler's context had no deadline: grpc-timeout did not reach the upstream")
			}
			return
		}
	})

	t.Run("cancel", func(t *testing.T) {
		id := fmt.Sprintf("cancel-%d", callIDs.Add(1))
		c := svc.call(id)
		cctx, ccancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "x-call", id))
		errc := make(chan error, 1)
		go func() {
			_, err := client.EmptyCall(cctx, &testgrpc.Empty{})
			errc <- err
		}()
		waitClosed(t, c.started, "the call to reach the upstream")
		ccancel()
		if err := <-errc; status.Code(err) != codes.Canceled {
			t.Errorf("EmptyCall: %v, want Canceled", err)
		}
		waitClosed(t, c.ended, "the handler's context to end after the client cancelled")
		if !errors.Is(c.err, context.Canceled) {
			t.Errorf("the handler's context ended with %v, want context.Canceled", c.err)
		}
	})
}

// waitClosed waits (with a generous ceiling) for ch to be closed.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("gave up waiting for %s", what)
	}
}

// A gRPC server over TLS with a self-signed certificate: the agent trusts
// it with --upstream-ca or skips the check with --upstream-insecure (and
// speaks h2 through ALPN, which grpc-go requires); without either it
// answers 502, naming the certificate problem in its log.
func TestGRPCHTTPSUpstream(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := selfSigned(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	_, port := startGRPCServer(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	upstream := fmt.Sprintf("https://127.0.0.1:%d", port)
	e := startEdge(t, "T")
	startHTTPAgent(t, "http://"+e.addr, e.publicURL("withca"), "auto", "withca", upstream, nil, "--upstream-ca", certFile)
	startHTTPAgent(t, "http://"+e.addr, e.publicURL("insecure"), "auto", "insecure", upstream, nil, "--upstream-insecure")
	untrusted := startHTTPAgent(t, "http://"+e.addr, e.publicURL("untrusted"), "auto", "untrusted", upstream, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{"withca", "insecure"} {
		client := grpcClient(t, e.addr, fmt.Sprintf("%s.localhost:%d", name, e.port), insecure.NewCredentials())
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte(name)}})
		if err != nil || string(resp.GetPayload().GetBody()) != name {
			t.Errorf("%s: UnaryCall: %v, %v", name, resp, err)
		}
	}

	client := grpcClient(t, e.addr, fmt.Sprintf("untrusted.localhost:%d", e.port), insecure.NewCredentials())
	_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "502") {
		t.Errorf("untrusted: UnaryCall: %v, want Unavailable with HTTP 502", err)
	}
	resp, body := do(t, tunnelClient(t, e.addr), "GET", e.publicURL("untrusted")+"/", nil, nil)
	if resp.StatusCode != 502 || !strings.Contains(string(body), "does not trust the TLS certificate of 127.0.0.1:") {
		t.Errorf("untrusted: %d %s; want 502 naming the certificate", resp.StatusCode, body)
	}
	if !untrusted.waitOutput(untrusted.stderr, "x509: certificate signed by unknown authority", 15*time.Second) {
		t.Errorf("the agent's log does not name the certificate problem:\n%s", untrusted.stderr)
	}
}
