// Package redistest starts a real redis-server (Debian's redis-server
// package) for tests: one process on a free 127.0.0.1 port, without
// persistence, that a test may stop and start again on the same port (a
// Redis restart: the data is gone). A test that needs it fails, never
// skips, when redis-server is missing: CI installs it (bash .ci/run), and
// so must a developer (apt-get install redis-server).
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testtool"
)

// Server is a redis-server run by a test. Its methods are for the test's
// goroutine.
type Server struct {
	Addr string // 127.0.0.1:PORT
	tb   testing.TB
	bin  string
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *syncBuffer
}

// URL is the server's URL for database db, as the edge's --cluster takes
// it: redis://127.0.0.1:PORT/DB.
func (s *Server) URL(db int) string { return "redis://" + s.Addr + "/" + strconv.Itoa(db) }

// Start runs redis-server for tb's duration on a free loopback port and
// returns once it answers PING.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: testtool.Need(tb, "redis-server", "redis-server"), dir: tb.TempDir()}
	var lastErr error
	for range 3 { // the free port may be taken between its choice and redis's bind
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		s.Addr = ln.Addr().String()
		ln.Close()
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(func() {
				s.stop()
				if tb.Failed() {
					tb.Logf("redis-server's log:\n%s", s.log.String())
				}
			})
			return s
		}
	}
	tb.Fatalf("redistest: redis-server did not start: %v", lastErr)
	return nil
}

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = exec.Command(s.bin,
		"--port", port, "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "notice")
	if s.log == nil {
		s.log = &syncBuffer{}
	}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", s.bin, err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("redis-server exited: %s\n%s", s.cmd.ProcessState, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if s.ping() == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("redis-server does not answer on %s after a minute:\n%s", s.Addr, s.log.String())
		}
	}
}

// ping sends PING and expects +PONG.
func (s *Server) ping() error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// stop kills the server (if running) and waits for it.
func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Stop stops the server, as a crash would: its port refuses connections
// until Restart.
func (s *Server) Stop() {
	s.tb.Helper()
	s.stop()
}

// Restart starts the server again on the same port, empty, and returns
// once it answers.
func (s *Server) Restart() {
	s.tb.Helper()
	s.stop()
	var err error
	for range 50 { // the port may still be in TIME_WAIT's way for a moment
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.tb.Fatalf("redistest: restart on %s: %v", s.Addr, err)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
