package benchmark

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/stats"
)

// TCPConfig says what the TCP run measures: a TCP server in this process
// reached directly, through "sluice tcp" with each protocol and, when
// their binaries are given, through frp's TCP mode and chisel.
type TCPConfig struct {
	// Protocols are the sluice protocols measured after direct, in order
	// (nil: v1 and v2).
	Protocols []string
	// SluiceBin is the sluice binary run as the edge and the agent.
	SluiceBin string
	// FrpDir, if set, is a directory holding frps and frpc.
	FrpDir string
	// ChiselDir, if set, is a directory holding chisel.
	ChiselDir string
	// Size is the bytes of the download and of the upload, each over one
	// connection (0: 1 GiB).
	Size int64
	// Conns is the number of connections of the request/response run
	// (0: 50).
	Conns int
	// MessageSize is the bytes of each request and of its echo (0: 100).
	MessageSize int
	// SetupWorkers is the number of workers of the connection setup run,
	// each connecting, making one round trip and closing, back to back
	// (0: 8).
	SetupWorkers int
	// Duration is the length of the request/response run and of the setup
	// run, each after a short warm-up (0: 5 s).
	Duration time.Duration
	// Held is the number of idle connections held for the memory
	// measurement (0: 1,000).
	Held int
	// Settle is how long they are held before memory is read (0: 2 s).
	Settle time.Duration
	// Progress, if set, receives one line per step.
	Progress io.Writer
}

// tcpMaxMessage bounds MessageSize: a request must fit in one read of the
// echo server's buffer.
const tcpMaxMessage = 64 << 10

func (c *TCPConfig) defaults() error {
	if c.Protocols == nil {
		c.Protocols = []string{"v1", "v2"}
	}
	if c.Size == 0 {
		c.Size = 1 << 30
	}
	if c.Conns == 0 {
		c.Conns = 50
	}
	if c.MessageSize == 0 {
		c.MessageSize = 100
	}
	if c.SetupWorkers == 0 {
		c.SetupWorkers = 8
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Held == 0 {
		c.Held = 1000
	}
	if c.Settle == 0 {
		c.Settle = 2 * time.Second
	}
	switch {
	case c.Size < 0 || c.Conns < 0 || c.SetupWorkers < 0 || c.Duration < 0 || c.Held < 0 || c.Settle < 0:
		return errors.New("benchmark: tcp: size, conns, setup workers, duration, held and settle must not be negative")
	case c.MessageSize < 0 || c.MessageSize > tcpMaxMessage:
		return fmt.Errorf("benchmark: tcp: the message size must be between 1 and %d bytes", tcpMaxMessage)
	case len(c.Protocols) > 0 && c.SluiceBin == "":
		return errors.New("benchmark: tcp: no sluice binary")
	}
	for _, p := range c.Protocols {
		if p != "v1" && p != "v2" {
			return fmt.Errorf("benchmark: tcp: unknown protocol %q (want v1 or v2)", p)
		}
	}
	return nil
}

// TCPReport is the outcome of a TCP run. Its JSON form is "bench tcp
// --json".
type TCPReport struct {
	Env          Env               `json:"env"`
	SizeBytes    int64             `json:"size_bytes"`
	Conns        int               `json:"conns"`
	MessageBytes int               `json:"message_bytes"`
	SetupWorkers int               `json:"setup_workers"`
	DurationS    float64           `json:"duration_s"`
	Held         int               `json:"held"`
	SettleS      float64           `json:"settle_s"`
	Targets      []TCPResult       `json:"targets"`
	Skipped      map[string]string `json:"skipped,omitempty"`
}

// TCPResult is one target's figures ("direct", "sluice-v1", "sluice-v2",
// "frp", "chisel"). Error is set when a measurement failed; the figures
// measured before it are kept.
type TCPResult struct {
	Name     string        `json:"name"`
	Download *Transfer     `json:"download"`
	Upload   *Transfer     `json:"upload"`
	Echo     *TCPRate      `json:"request_response"`
	Setup    *TCPRate      `json:"connection_setup"`
	Memory   *MemoryResult `json:"memory"` // Streams: the held connections
	Error    string        `json:"error,omitempty"`
}

// TCPRate is a closed-loop run: Workers workers doing one operation back
// to back (a round trip on a connection of their own, or connecting,
// making one round trip and closing).
type TCPRate struct {
	Workers int     `json:"workers"`
	Ops     int64   `json:"ops"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_s"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
}

// TCP measures TCP connections to a server in this process, directly and
// through each tunnel in turn, in one run: a download and an upload of
// Size bytes over one connection each, request/response round trips on
// Conns connections, connections set up (connect, one round trip, close)
// per second, and the resident memory of the tunnel's processes per held
// idle connection. Every byte count and echo is checked; a failure is
// reported with its target and the other targets still run.
func TCP(ctx context.Context, cfg TCPConfig) (*TCPReport, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	up, err := startTCPUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	rep := &TCPReport{
		Env:          Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
		SizeBytes:    cfg.Size,
		Conns:        cfg.Conns,
		MessageBytes: cfg.MessageSize,
		SetupWorkers: cfg.SetupWorkers,
		DurationS:    cfg.Duration.Seconds(),
		Held:         cfg.Held,
		SettleS:      cfg.Settle.Seconds(),
		Skipped:      map[string]string{},
	}
	names := append([]string{"direct"}, prefixAll("sluice-", cfg.Protocols)...)
	if cfg.FrpDir != "" {
		names = append(names, "frp")
	} else {
		rep.Skipped["frp"] = "no frps/frpc given (--frp DIR or $SLUICE_BENCH_FRP)"
	}
	if cfg.ChiselDir != "" {
		names = append(names, "chisel")
	} else {
		rep.Skipped["chisel"] = "no chisel given (--chisel DIR or $SLUICE_BENCH_CHISEL)"
	}
	var failed []string
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		res, err := tcpTarget(ctx, cfg, up, name)
		if err != nil {
			res.Error = err.Error()
			first, _, _ := strings.Cut(res.Error, "\n")
			failed = append(failed, name+": "+first)
			logf(cfg.Progress, "%s: FAILED: %v", name, err)
		}
		rep.Targets = append(rep.Targets, res)
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("benchmark: tcp: interrupted: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("benchmark: tcp failed: %s", strings.Join(failed, "; "))
	}
	return rep, nil
}

// tcpTarget starts a target (nothing for direct), measures it and stops
// it.
func tcpTarget(ctx context.Context, cfg TCPConfig, up *tcpUpstream, name string) (res TCPResult, err error) {
	res.Name = name
	logf(cfg.Progress, "%s: starting", name)
	addr := up.addr()
	var t *procTarget
	switch {
	case name == "direct":
	case name == "frp":
		t, addr, err = startFrp(ctx, cfg.FrpDir, up.addr())
	case name == "chisel":
		t, addr, err = startChisel(ctx, cfg.ChiselDir, up.addr())
	default:
		t, addr, err = startSluiceTCP(ctx, cfg.SluiceBin, up.addr(), strings.TrimPrefix(name, "sluice-"), max(cfg.Held, cfg.Conns, cfg.SetupWorkers, 1024)+64)
	}
	if err != nil {
		return res, err
	}
	if t != nil {
		defer func() {
			if stopErr := t.stop(); stopErr != nil && err == nil {
				err = stopErr
			}
		}()
	}
	fail := func(what string, err error) (TCPResult, error) {
		err = fmt.Errorf("%s: %w", what, err)
		if t != nil {
			if out := t.output(); out != "" {
				err = fmt.Errorf("%w\n%s output:\n%s", err, name, out)
			}
		}
		return res, err
	}
	if err := waitTCP(ctx, addr, t); err != nil {
		return fail("the first round trip", err)
	}
	if res.Download, err = tcpDownload(ctx, addr, cfg.Size); err != nil {
		return fail("download", err)
	}
	logf(cfg.Progress, "%s: download: %s in %.2f s: %.0f MB/s", name, byteSize(cfg.Size), res.Download.Seconds, res.Download.MBps)
	if res.Upload, err = tcpUpload(ctx, addr, cfg.Size, up); err != nil {
		return fail("upload", err)
	}
	logf(cfg.Progress, "%s: upload: %s in %.2f s: %.0f MB/s", name, byteSize(cfg.Size), res.Upload.Seconds, res.Upload.MBps)
	if res.Echo, err = tcpEcho(ctx, addr, cfg); err != nil {
		return fail("request/response", err)
	}
	logf(cfg.Progress, "%s: request/response: %d connections, %.0f round trips/s, p50 %s ms, p99 %s ms",
		name, res.Echo.Workers, res.Echo.PerSec, ms(res.Echo.P50Ms), ms(res.Echo.P99Ms))
	if res.Setup, err = tcpSetup(ctx, addr, cfg); err != nil {
		return fail("connection setup", err)
	}
	logf(cfg.Progress, "%s: connection setup: %d workers, %.0f connections/s, p50 %s ms, p99 %s ms",
		name, res.Setup.Workers, res.Setup.PerSec, ms(res.Setup.P50Ms), ms(res.Setup.P99Ms))
	if t != nil {
		if res.Memory, err = tcpMemory(ctx, addr, cfg, up, t); err != nil {
			return fail("memory", err)
		}
		logf(cfg.Progress, "%s: memory: %d held connections, %.1f KB each", name, res.Memory.Streams, res.Memory.PerStreamKB)
		if err := t.alive(); err != nil {
			return fail("after the run", err)
		}
	}
	return res, nil
}

// The upstream's commands: the first byte a connection sends.
const (
	tcpCmdDownload = 'D' // then 8 bytes of size: the server sends that many bytes and closes
	tcpCmdUpload   = 'U' // then 8 bytes of size: the server reads that many bytes and answers the count in 8 bytes
	tcpCmdEcho     = 'E' // the server echoes what it reads until EOF
	tcpCmdHold     = 'H' // the server counts the connection held until EOF
)

// tcpUpstream is the TCP server behind every target, inside the
// benchmark process.
type tcpUpstream struct {
	ln    net.Listener
	data  []byte // the pattern downloads send
	held  atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startTCPUpstream() (*tcpUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &tcpUpstream{ln: ln, data: make([]byte, relayBuffer), conns: map[net.Conn]struct{}{}}
	for i := range u.data {
		u.data[i] = byte(i * 7)
	}
	u.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[c] = struct{}{}
			u.mu.Unlock()
			u.wg.Go(func() {
				u.serve(c)
				u.mu.Lock()
				delete(u.conns, c)
				u.mu.Unlock()
				c.Close()
			})
		}
	})
	return u, nil
}

func (u *tcpUpstream) addr() string { return u.ln.Addr().String() }

// close stops accepting, closes every connection and waits for their
// goroutines.
func (u *tcpUpstream) close() {
	u.ln.Close()
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

func (u *tcpUpstream) serve(c net.Conn) {
	var cmd [1]byte
	if _, err := io.ReadFull(c, cmd[:]); err != nil {
		return
	}
	switch cmd[0] {
	case tcpCmdDownload:
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		left := int64(binary.BigEndian.Uint64(hdr[:]))
		for left > 0 {
			n, err := c.Write(u.data[:min(left, int64(len(u.data)))])
			left -= int64(n)
			if err != nil {
				return
			}
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	case tcpCmdUpload:
		// The size comes first rather than a half-close ending the
		// upload: frp and chisel close the whole connection on a
		// half-close, and the upload must measure them too.
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n, err := io.CopyBuffer(io.Discard, io.LimitReader(c, int64(binary.BigEndian.Uint64(hdr[:]))), make([]byte, relayBuffer))
		if err != nil {
			return
		}
		var ans [8]byte
		binary.BigEndian.PutUint64(ans[:], uint64(n))
		c.Write(ans[:])
	case tcpCmdEcho:
		buf := make([]byte, tcpMaxMessage)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	case tcpCmdHold:
		u.held.Add(1)
		defer u.held.Add(-1)
		io.Copy(io.Discard, c)
	}
}

// tcpTimeout bounds one round trip or one connection setup: a ceiling for
// a stuck target, generous for a busy machine.
const tcpTimeout = time.Minute

// transferTimeout bounds one bulk transfer of size bytes.
func tcpTransferTimeout(size int64) time.Duration {
	return time.Minute + time.Duration(size/(5<<20))*time.Second
}

func dialTCP(ctx context.Context, addr string) (*net.TCPConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// tcpDownload asks the upstream for size bytes over one connection and
// reads them to the end, checking the count.
func tcpDownload(ctx context.Context, addr string, size int64) (*Transfer, error) {
	ctx, cancel := context.WithTimeout(ctx, tcpTransferTimeout(size))
	defer cancel()
	start := time.Now()
	c, err := dialTCP(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var hdr [9]byte
	hdr[0] = tcpCmdDownload
	binary.BigEndian.PutUint64(hdr[1:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return nil, err
	}
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, make([]byte, 256<<10))
	elapsed := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("after %d of %d bytes: %w", n, size, err)
	}
	if n != size {
		return nil, fmt.Errorf("received %d bytes, want %d", n, size)
	}
	return &Transfer{Bytes: n, Seconds: elapsed.Seconds(), MBps: float64(n) / 1e6 / elapsed.Seconds()}, nil
}

// tcpUpload sends size bytes over one connection, announced first, and
// reads the count the upstream received.
func tcpUpload(ctx context.Context, addr string, size int64, up *tcpUpstream) (*Transfer, error) {
	ctx, cancel := context.WithTimeout(ctx, tcpTransferTimeout(size))
	defer cancel()
	start := time.Now()
	c, err := dialTCP(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var hdr [9]byte
	hdr[0] = tcpCmdUpload
	binary.BigEndian.PutUint64(hdr[1:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return nil, err
	}
	body := &patternReader{data: up.data, left: size}
	if _, err := io.CopyBuffer(struct{ io.Writer }{c}, body, make([]byte, 256<<10)); err != nil {
		return nil, fmt.Errorf("after sending %d of %d bytes: %w", size-body.left, size, err)
	}
	var ans [8]byte
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		return nil, fmt.Errorf("reading the count: %w", err)
	}
	elapsed := time.Since(start)
	if got := int64(binary.BigEndian.Uint64(ans[:])); got != size {
		return nil, fmt.Errorf("the upstream received %d bytes, want %d", got, size)
	}
	return &Transfer{Bytes: size, Seconds: elapsed.Seconds(), MBps: float64(size) / 1e6 / elapsed.Seconds()}, nil
}

// roundTrip writes msg and reads its echo, checking it.
func roundTrip(c net.Conn, msg, buf []byte) error {
	c.SetDeadline(time.Now().Add(tcpTimeout))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if !slices.Equal(buf[:len(msg)], msg) {
		return errors.New("the echo differs from the request")
	}
	return nil
}

// echoMessage returns a worker's request: the echo command first when
// first is set, then MessageSize bytes.
func echoMessage(size int, first bool) []byte {
	msg := make([]byte, 0, size+1)
	if first {
		msg = append(msg, tcpCmdEcho)
	}
	for i := range size {
		msg = append(msg, byte('a'+i%26))
	}
	return msg
}

// tcpEcho runs Conns workers, each with a connection of its own making
// round trips of MessageSize bytes back to back for Duration.
func tcpEcho(ctx context.Context, addr string, cfg TCPConfig) (*TCPRate, error) {
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	lat, secs, err := closedLoop(ctx, cfg.Conns, cfg.Duration, func() func(context.Context) error {
		var c net.Conn
		msg := echoMessage(cfg.MessageSize, false)
		buf := make([]byte, len(msg))
		return func(ctx context.Context) error {
			if c == nil {
				dc, err := dialTCP(ctx, addr)
				if err != nil {
					return err
				}
				mu.Lock()
				conns = append(conns, dc)
				mu.Unlock()
				c = dc
				if _, err := c.Write([]byte{tcpCmdEcho}); err != nil {
					return err
				}
			}
			return roundTrip(c, msg, buf)
		}
	})
	if err != nil {
		return nil, err
	}
	return tcpRate(cfg.Conns, lat, secs), nil
}

// tcpSetup runs SetupWorkers workers, each connecting, making one round
// trip and closing, back to back for Duration.
func tcpSetup(ctx context.Context, addr string, cfg TCPConfig) (*TCPRate, error) {
	lat, secs, err := closedLoop(ctx, cfg.SetupWorkers, cfg.Duration, func() func(context.Context) error {
		msg := echoMessage(cfg.MessageSize, true)
		buf := make([]byte, len(msg))
		return func(ctx context.Context) error {
			c, err := dialTCP(ctx, addr)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(tcpTimeout)); err != nil {
				return err
			}
			if _, err := c.Write(msg[:1]); err != nil {
				return err
			}
			return roundTrip(c, msg[1:], buf)
		}
	})
	if err != nil {
		return nil, err
	}
	return tcpRate(cfg.SetupWorkers, lat, secs), nil
}

func tcpRate(workers int, lat []time.Duration, secs float64) *TCPRate {
	sum := stats.Summarize(lat)
	return &TCPRate{
		Workers: workers,
		Ops:     int64(sum.N),
		Seconds: secs,
		PerSec:  float64(sum.N) / secs,
		P50Ms:   durMs(sum.P50),
		P99Ms:   durMs(sum.P99),
	}
}

// waitTCP makes a round trip on a new connection until one succeeds, for
// up to readyTimeout: the tunnel may not be up yet. t, if set, is the
// target whose processes must stay alive meanwhile.
func waitTCP(ctx context.Context, addr string, t *procTarget) error {
	deadline := time.Now().Add(readyTimeout)
	msg := echoMessage(16, true)
	buf := make([]byte, len(msg))
	for {
		if t != nil {
			if err := t.alive(); err != nil {
				return err
			}
		}
		err := func() error {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			c, err := dialTCP(cctx, addr)
			if err != nil {
				return err
			}
			defer c.Close()
			c.Write(msg[:1])
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(msg[1:]); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf[:len(msg)-1]); err != nil {
				return err
			}
			return nil
		}()
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

// tcpMemory reads the resident memory of t's processes, opens Held idle
// connections through it (each reaching the upstream, which counts it),
// holds them for Settle, reads it again and closes them.
func tcpMemory(ctx context.Context, addr string, cfg TCPConfig, up *tcpUpstream, t *procTarget) (*MemoryResult, error) {
	k := cfg.Held
	procs, err := t.procs()
	if err != nil {
		return nil, err
	}
	eachBefore, _, err := rssKB(procs)
	if err != nil {
		return nil, err
	}
	base := up.held.Load()
	conns := make([]net.Conn, 0, k)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	for i := range k {
		c, err := dialTCP(octx, addr)
		if err != nil {
			return nil, fmt.Errorf("opening held connection %d of %d: %w", i+1, k, err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte{tcpCmdHold}); err != nil {
			return nil, fmt.Errorf("held connection %d of %d: %w", i+1, k, err)
		}
	}
	if err := waitCount(&up.held, base+int64(k), openTimeout); err != nil {
		return nil, fmt.Errorf("the upstream: %w", err)
	}
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	procsAfter, err := t.procs()
	if err != nil {
		return nil, err
	}
	eachAfter, _, err := rssKB(procsAfter)
	if err != nil {
		return nil, err
	}
	if got := up.held.Load(); got != base+int64(k) {
		return nil, fmt.Errorf("the upstream holds %d connections after the settle time, want %d", got-base, k)
	}
	if !slices.Equal(procs, procsAfter) {
		return nil, fmt.Errorf("the processes changed while the connections were held: %v before, %v after", procs, procsAfter)
	}
	return newMemoryResult(procs, eachBefore, eachAfter, k), nil
}

// WriteTable prints the report as a table with a column per target, each
// figure with its ratio to direct's.
func (r *TCPReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice bench tcp: loopback, %d CPUs, %s %s/%s\n", r.Env.CPUs, r.Env.GoVersion, r.Env.OS, r.Env.Arch)
	fmt.Fprintf(&b, "%s down and up over one connection; %d B round trips on %d connections and connection setups by %d workers, %gs each; %d idle connections held %gs\n\n",
		byteSize(r.SizeBytes), r.MessageBytes, r.Conns, r.SetupWorkers, r.DurationS, r.Held, r.SettleS)
	var direct *TCPResult
	for i := range r.Targets {
		if r.Targets[i].Name == "direct" {
			direct = &r.Targets[i]
		}
	}
	transfer := func(which func(*TCPResult) *Transfer) func(*TCPResult) (float64, bool) {
		return func(t *TCPResult) (float64, bool) {
			if x := which(t); x != nil {
				return x.MBps, true
			}
			return 0, false
		}
	}
	rate := func(which func(*TCPResult) *TCPRate, f func(*TCPRate) float64) func(*TCPResult) (float64, bool) {
		return func(t *TCPResult) (float64, bool) {
			if x := which(t); x != nil {
				return f(x), true
			}
			return 0, false
		}
	}
	echo := func(t *TCPResult) *TCPRate { return t.Echo }
	setup := func(t *TCPResult) *TCPRate { return t.Setup }
	perSec := func(x *TCPRate) float64 { return x.PerSec }
	p99 := func(x *TCPRate) float64 { return x.P99Ms }
	whole := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	rows := []ratioRow[TCPResult]{
		{"download MB/s", transfer(func(t *TCPResult) *Transfer { return t.Download }), whole},
		{"upload MB/s", transfer(func(t *TCPResult) *Transfer { return t.Upload }), whole},
		{fmt.Sprintf("round trips/s (%d conns)", r.Conns), rate(echo, perSec), whole},
		{"round trip p99 ms", rate(echo, p99), ms},
		{fmt.Sprintf("connections/s (%d workers)", r.SetupWorkers), rate(setup, perSec), whole},
		{"connection p99 ms", rate(setup, p99), ms},
		{fmt.Sprintf("memory KB per held conn (%d)", r.Held), func(t *TCPResult) (float64, bool) {
			if t.Memory == nil {
				return 0, false
			}
			return t.Memory.PerStreamKB, true
		}, func(v float64) string { return fmt.Sprintf("%.1f", v) }},
	}
	writeRatioTable(&b, r.Targets, func(t *TCPResult) string { return t.Name }, direct, rows,
		func(t *TCPResult, label string) string {
			switch {
			case t.Name == "direct" && strings.HasPrefix(label, "memory"):
				return "n/a"
			case t.Error != "":
				return "failed"
			default:
				return "-"
			}
		})
	b.WriteString("\n(×: the figure over direct's. Higher is better for MB/s and /s, lower for ms and KB.)\n")
	b.WriteString("memory: both processes of each tunnel (VmRSS); direct is n/a: the server runs inside the benchmark process.\n")
	for _, name := range slices.Sorted(maps.Keys(r.Skipped)) {
		fmt.Fprintf(&b, "%s: skipped: %s\n", name, r.Skipped[name])
	}
	for _, t := range r.Targets {
		if t.Error != "" {
			first, _, _ := strings.Cut(t.Error, "\n")
			fmt.Fprintf(&b, "%s FAILED: %s\n", t.Name, first)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
