package benchmark

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// inspectOff are the flags of a "sluice http" measured without the
// inspector.
var inspectOff = []string{"--inspect", "off"}

// target is something requests are sent to.
type target interface {
	baseURL() string // such as http://127.0.0.1:8080
	host() string    // the Host header to send, or "" for the URL's
	// measurable reports whether the target runs in processes of its own,
	// which procs lists.
	measurable() bool
	procs() ([]proc, error)
	alive() error   // nil while the target's processes run
	output() string // the recent output of its processes, for errors
	stop() error
}

// direct is the upstream itself, in the benchmark process.
type direct struct{ port int }

func directTarget(u *upstream) target { return direct{u.port} }

func (d direct) baseURL() string      { return "http://127.0.0.1:" + strconv.Itoa(d.port) }
func (direct) host() string           { return "" }
func (direct) measurable() bool       { return false }
func (direct) procs() ([]proc, error) { return nil, nil }
func (direct) alive() error           { return nil }
func (direct) output() string         { return "" }
func (direct) stop() error            { return nil }

// procTarget is a target made of child processes.
type procTarget struct {
	base     string
	hostHdr  string
	children []*child
	// withChildren adds the children of the child processes to procs
	// (nginx's workers).
	withChildren bool
	childLabel   string // their name
	// logFile, if set, is a log whose tail output adds.
	logFile string
	cleanup func()
}

func (t *procTarget) baseURL() string  { return t.base }
func (t *procTarget) host() string     { return t.hostHdr }
func (t *procTarget) measurable() bool { return true }

// proc is a process of a target.
type proc struct {
	pid  int
	name string
	role string // roleEdge, roleAgent or ""
}

func (t *procTarget) procs() ([]proc, error) {
	var procs []proc
	for _, c := range t.children {
		if err := c.alive(); err != nil {
			return nil, err
		}
		procs = append(procs, proc{c.cmd.Process.Pid, c.name, c.role})
		if t.withChildren {
			kids, err := childPIDs(c.cmd.Process.Pid)
			if err != nil {
				return nil, err
			}
			for _, k := range kids {
				procs = append(procs, proc{k, t.childLabel, c.role})
			}
		}
	}
	return procs, nil
}

func (t *procTarget) alive() error {
	for _, c := range t.children {
		if err := c.alive(); err != nil {
			return err
		}
	}
	return nil
}

func (t *procTarget) output() string {
	var b strings.Builder
	for _, c := range t.children {
		if out := c.out.String(); out != "" {
			fmt.Fprintf(&b, "--- %s:\n%s", c.name, out)
			if !strings.HasSuffix(out, "\n") {
				b.WriteByte('\n')
			}
		}
	}
	if t.logFile != "" {
		if data, err := os.ReadFile(t.logFile); err == nil && len(data) > 0 {
			if len(data) > 8<<10 {
				data = data[len(data)-8<<10:]
			}
			fmt.Fprintf(&b, "--- %s:\n%s", filepath.Base(t.logFile), data)
		}
	}
	return b.String()
}

// stop stops the children in reverse order of their start.
func (t *procTarget) stop() error {
	var errs []error
	for i := len(t.children) - 1; i >= 0; i-- {
		if err := t.children[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if t.cleanup != nil {
		t.cleanup()
	}
	return errors.Join(errs...)
}

// startSluice starts "sluice edge" (with at most maxStreams streams per
// tunnel, and perIP per client address; 0: the edge's default) and "sluice
// http UPPORT --protocol PROTOCOL --inspect off" as child processes of bin,
// and waits until GET readyPath goes through the tunnel.
func startSluice(ctx context.Context, bin string, upPort int, protocol string, maxStreams, perIP int, readyPath string) (*procTarget, error) {
	return startSluiceTo(ctx, bin, strconv.Itoa(upPort), protocol, maxStreams, perIP, readyPath)
}

// startSluiceTo is startSluice with the agent's upstream argument as
// "sluice http" takes it (a port, or a URL such as h2c://127.0.0.1:PORT)
// and more flags for the agent; with readyPath empty it waits for the edge
// only, and the caller for the tunnel.
//
// The agent runs without the inspector (on by default in sluice http)
// unless agentArgs say --inspect: the benchmarks measure the tunnel, as
// they did before the inspector existed; the inspect scenario measures the
// inspector.
func startSluiceTo(ctx context.Context, bin, upstream, protocol string, maxStreams, perIP int, readyPath string, agentArgs ...string) (*procTarget, error) {
	if !slices.Contains(agentArgs, "--inspect") {
		agentArgs = append(slices.Clone(agentArgs), inspectOff...)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	tok := make([]byte, 16)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	t := &procTarget{base: "http://" + addr, hostHdr: "bench.localhost:" + strconv.Itoa(port)}
	args := []string{"edge", "--listen", addr, "--domain", "localhost", "--token", token, "--max-streams", strconv.Itoa(maxStreams)}
	if perIP > 0 {
		// Most benchmarks' clients are all one loopback address.
		args = append(args, "--max-streams-per-ip", strconv.Itoa(perIP))
	}
	edge, err := startChild("sluice edge", bin, args...)
	if err != nil {
		return nil, err
	}
	edge.role = roleEdge
	t.children = append(t.children, edge)
	// The agent starts once the edge answers, so that it connects at once
	// rather than after a backoff.
	if err := waitReady(ctx, t, "/healthz", ""); err != nil {
		t.stop()
		return nil, fmt.Errorf("the edge did not start: %w\n%s", err, t.output())
	}
	agent, err := startChild("sluice http", bin, append([]string{
		"http", upstream, "--edge", "http://" + addr, "--token", token, "--name", "bench", "--quiet", "--protocol", protocol}, agentArgs...)...)
	if err != nil {
		t.stop()
		return nil, err
	}
	agent.role = roleAgent
	t.children = append(t.children, agent)
	if readyPath == "" {
		return t, nil
	}
	if err := waitReady(ctx, t, readyPath, t.hostHdr); err != nil {
		t.stop()
		return nil, fmt.Errorf("the tunnel did not come up: %w\n%s", err, t.output())
	}
	return t, nil
}

// nginxConf is the reverse-proxy configuration: streaming both ways
// (proxy_buffering off, proxy_request_buffering off), HTTP/1.1 with
// keep-alive to the upstream, and nginx's defaults otherwise.
// keepalive_requests is raised from its default (1000) on both sides so
// that the small-request run does not measure reconnections.
const nginxConf = `# written by sluice bench
worker_processes auto;
worker_rlimit_nofile {{nofile}};
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;

events {
    worker_connections {{conns}};
}

http {
    access_log off;
    client_body_temp_path {{dir}}/client_body_temp;
    proxy_temp_path {{dir}}/proxy_temp;
    fastcgi_temp_path {{dir}}/fastcgi_temp;
    uwsgi_temp_path {{dir}}/uwsgi_temp;
    scgi_temp_path {{dir}}/scgi_temp;
    client_max_body_size 0;
    keepalive_requests 1000000;

    upstream bench_upstream {
        server 127.0.0.1:{{upport}};
        keepalive 128;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
`

// startNginx writes nginxConf to a temporary directory, starts nginx on
// it in the foreground, and waits until it proxies.
func startNginx(ctx context.Context, cfg Config, upPort int) (target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sluice-bench-nginx-")
	if err != nil {
		return nil, err
	}
	// Workers may run as another user when nginx starts as root.
	os.Chmod(dir, 0o755)
	// Every stream takes two connections (client and upstream), possibly
	// all in one worker.
	conns := 2*max(cfg.SSEStreams, cfg.MemStreams, cfg.Clients) + 1024
	conf := strings.NewReplacer(
		"{{dir}}", dir,
		"{{nofile}}", strconv.Itoa(2*conns),
		"{{conns}}", strconv.Itoa(conns),
		"{{upport}}", strconv.Itoa(upPort),
		"{{port}}", strconv.Itoa(port),
	).Replace(nginxConf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	t := &procTarget{
		base:         "http://127.0.0.1:" + strconv.Itoa(port),
		withChildren: true,
		childLabel:   "nginx worker",
		logFile:      filepath.Join(dir, "error.log"),
		cleanup:      func() { os.RemoveAll(dir) },
	}
	master, err := startChild("nginx master", cfg.NginxBin, "-c", confPath, "-p", dir, "-g", "daemon off;")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	t.children = append(t.children, master)
	if err := waitReady(ctx, t, "/small", ""); err != nil {
		out := t.output()
		t.stop()
		return nil, fmt.Errorf("nginx did not start: %w\n%s", err, out)
	}
	return t, nil
}

// readyTimeout bounds the wait for a target to come up: a ceiling for a
// target that never will, generous for a busy machine.
const readyTimeout = time.Minute

// waitReady polls GET path until it answers 200, for up to readyTimeout.
func waitReady(ctx context.Context, t target, path, host string) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(readyTimeout)
	var last string
	for {
		if err := t.alive(); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.baseURL()+path, nil)
		if err != nil {
			return err
		}
		if host != "" {
			req.Host = host
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET %s still failing after %v: %s", path, readyTimeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// child is a child process whose output is kept.
type child struct {
	name    string
	role    string // in the figures split by process: roleEdge, roleAgent or ""
	cmd     *exec.Cmd
	out     *tailBuffer    // standard output and error, or only error with stdout set
	stdout  *tailBuffer    // standard output, if kept apart
	stdin   io.WriteCloser // if asked for; stop closes it first
	exited  chan struct{}
	waitErr error
}

func startChild(name, bin string, args ...string) (*child, error) {
	return startChildWith(name, false, bin, args...)
}

// startChildWith starts a child; with pipes, its standard output is kept
// apart from its standard error and its standard input is a pipe that
// stays open until stop.
func startChildWith(name string, pipes bool, bin string, args ...string) (*child, error) {
	c := &child{name: name, out: &tailBuffer{max: 32 << 10}, exited: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if pipes {
		c.stdout = &tailBuffer{max: 32 << 10}
		c.cmd.Stdout = c.stdout
		w, err := c.cmd.StdinPipe()
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
		c.stdin = w
	}
	// Children die with the benchmark if it is killed.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s (pid %d) exited: %v", c.name, c.cmd.Process.Pid, c.waitErr)
	default:
		return nil
	}
}

// stop asks the child to end (closing its standard input if it is a
// pipe, then with SIGTERM) and kills it after 10 s.
func (c *child) stop() error {
	if c.stdin != nil {
		c.stdin.Close()
	}
	select {
	case <-c.exited:
		return nil
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not stop within 10 s of SIGTERM; killed", c.name)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// childPIDs returns the processes whose parent is pid, from /proc.
func childPIDs(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids, nil
}

// rssKB returns the VmRSS of each process, in KiB, from /proc/PID/status,
// and their sum.
func rssKB(procs []proc) (each []int64, total int64, err error) {
	for _, p := range procs {
		pid := p.pid
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return nil, 0, fmt.Errorf("memory of pid %d: %w", pid, err)
		}
		found := false
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				f := strings.Fields(rest)
				if len(f) != 2 || f[1] != "kB" {
					return nil, 0, fmt.Errorf("pid %d: unexpected VmRSS line %q", pid, line)
				}
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return nil, 0, fmt.Errorf("pid %d: VmRSS: %w", pid, err)
				}
				each = append(each, kb)
				total += kb
				found = true
				break
			}
		}
		if !found {
			return nil, 0, fmt.Errorf("pid %d has no VmRSS (a zombie?)", pid)
		}
	}
	return each, total, nil
}
