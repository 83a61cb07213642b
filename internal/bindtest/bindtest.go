// Package bindtest starts BIND (named, Debian's bind9 package) for tests:
// one authoritative primary on 127.0.0.1 serving one zone that takes
// dynamic updates (RFC 2136) signed with a TSIG key. A test that needs it
// fails, never skips, when named is missing: CI installs bind9
// (bash .ci/run), and so must a developer (apt-get install bind9).
package bindtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/sluicehq/sluice/internal/testtool"
)

// Key is a TSIG key as named.conf declares it.
type Key struct {
	Name      string // such as "sluice-acme"
	Algorithm string // "hmac-sha256"
	Secret    string // base64
}

// String is the key as NAME:ALGORITHM:SECRET (the edge's --dns-tsig-key).
func (k Key) String() string { return k.Name + ":" + k.Algorithm + ":" + k.Secret }

// Server is a running named.
type Server struct {
	Addr  string // 127.0.0.1:PORT, UDP and TCP
	Zone  string // the zone, absolute, such as "sluice.test."
	Key   Key    // granted TXT updates anywhere in Zone (update-policy zonesub TXT)
	Other Key    // known to named, granted nothing: its updates are REFUSED
	// Keys holds a granted key per TSIG algorithm named supports
	// (hmac-sha1 ... hmac-sha512), Key among them.
	Keys map[string]Key
}

// Algorithms are the TSIG algorithms of Server.Keys.
var Algorithms = []string{"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"}

// Config is what Start serves.
type Config struct {
	Zone    string   // such as "sluice.test" (required)
	Records []string // zone-file lines added to the zone, such as "*.sluice.test. 60 IN A 127.0.0.1"
}

// Start runs named in the foreground for tb's duration, serving cfg.Zone
// from a fresh temporary directory on a free 127.0.0.1 port; it returns
// once the zone answers.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	bin := testtool.Need(tb, "named", "bind9")
	zone := dns.Fqdn(cfg.Zone)
	s := &Server{
		Zone:  zone,
		Key:   Key{Name: "sluice-acme", Algorithm: "hmac-sha256", Secret: secret()},
		Other: Key{Name: "sluice-other", Algorithm: "hmac-sha256", Secret: secret()},
		Keys:  map[string]Key{},
	}
	for _, a := range Algorithms {
		s.Keys[a] = Key{Name: "sluice-" + a, Algorithm: a, Secret: secret()}
	}
	s.Keys[s.Key.Algorithm] = s.Key
	var lastErr error
	for range 3 { // the free port may be taken between its choice and named's bind
		dir := tb.TempDir()
		port, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		if err := s.write(dir, port, cfg.Records); err != nil {
			tb.Fatal(err)
		}
		if lastErr = s.run(tb, bin, dir); lastErr == nil {
			return s
		}
	}
	tb.Fatalf("bindtest: named did not start: %v", lastErr)
	return nil
}

func (s *Server) write(dir string, port int, records []string) error {
	var keys, grants strings.Builder
	fmt.Fprintf(&grants, "grant %s zonesub TXT;", s.Key.Name)
	for _, a := range Algorithms {
		if k := s.Keys[a]; k != s.Key {
			fmt.Fprintf(&keys, "key %q { algorithm %s; secret %q; };\n", k.Name, k.Algorithm, k.Secret)
			fmt.Fprintf(&grants, " grant %s zonesub TXT;", k.Name)
		}
	}
	conf := fmt.Sprintf(`options {
	directory %[1]q;
	pid-file %[10]q;
	session-keyfile %[11]q;
	managed-keys-directory %[1]q;
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
};
controls { };
key %[3]q { algorithm %[4]s; secret %[5]q; };
key %[6]q { algorithm %[7]s; secret %[8]q; };
%[12]szone %[9]q {
	type primary;
	file "zone.db";
	update-policy {
		%[13]s
	};
};
`, dir, port, s.Key.Name, s.Key.Algorithm, s.Key.Secret, s.Other.Name, s.Other.Algorithm, s.Other.Secret, s.Zone,
		filepath.Join(dir, "named.pid"), filepath.Join(dir, "session.key"), keys.String(), grants.String())
	db := fmt.Sprintf(`$TTL 60
@ IN SOA ns.%[1]s hostmaster.%[1]s 1 3600 600 86400 60
@ IN NS ns.%[1]s
ns IN A 127.0.0.1
%[2]s
`, s.Zone, strings.Join(records, "\n"))
	if err := os.WriteFile(filepath.Join(dir, "named.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "zone.db"), []byte(db), 0o644)
}

// run starts named and waits until it answers for the zone, or exits.
func (s *Server) run(tb testing.TB, bin, dir string) error {
	tb.Helper()
	args := []string{"-g", "-4", "-n", "1", "-c", filepath.Join(dir, "named.conf")}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // stay root: the temporary directory is root's
	}
	cmd := exec.Command(bin, args...)
	var log syncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("named exited: %s\n%s", cmd.ProcessState, log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if s.ready() {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("named does not answer on %s after 60s:\n%s", s.Addr, log.String())
		}
	}
	tb.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			stop()
		}
		if tb.Failed() {
			tb.Logf("named's log:\n%s", log.String())
		}
	})
	return nil
}

func (s *Server) ready() bool {
	m := new(dns.Msg)
	m.SetQuestion(s.Zone, dns.TypeSOA)
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, s.Addr)
	return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0
}

// TXT returns the strings of the TXT records at name (absolute or
// relative to the zone), each record's strings joined, as named answers
// them now.
func (s *Server) TXT(tb testing.TB, name string) []string {
	tb.Helper()
	if !strings.HasSuffix(name, ".") {
		name += "." + s.Zone
	}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeTXT)
	c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, s.Addr)
	if err != nil {
		tb.Fatalf("bindtest: TXT %s: %v", name, err)
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		tb.Fatalf("bindtest: TXT %s: %s", name, dns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out
}

func secret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// freePort returns a port free on 127.0.0.1 for both TCP and UDP.
func freePort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("bindtest: no port free for both TCP and UDP")
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

// Hook writes into a temporary directory an exec hook for the edge's
// --acme-dns exec (docs/dns-01.md: CMD set|clear FQDN VALUE) that updates
// s with BIND's nsupdate and Key, as a user's script for a DNS host
// would, and returns its path. It fails tb when nsupdate is missing: CI
// installs bind9-dnsutils.
func (s *Server) Hook(tb testing.TB) string {
	tb.Helper()
	nsupdate, err := exec.LookPath("nsupdate")
	if err != nil {
		tb.Fatalf("bindtest: nsupdate is not installed: apt-get install bind9-dnsutils (bash .ci/run does)")
	}
	host, port, _ := strings.Cut(s.Addr, ":")
	script := fmt.Sprintf(`#!/bin/sh
case "$1" in set) op=add ;; clear) op=delete ;; *) echo "unknown action $1" >&2; exit 2 ;; esac
%s -y %s <<EOF
server %s %s
update $op $2 60 TXT "$3"
send
EOF
`, nsupdate, s.Key.Algorithm+":"+s.Key.Name+":"+s.Key.Secret, host, port)
	p := filepath.Join(tb.TempDir(), "dns-hook")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	return p
}
