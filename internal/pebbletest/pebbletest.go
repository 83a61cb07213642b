// Package pebbletest runs Let's Encrypt's Pebble, a real ACME server, for
// tests: Start builds it (github.com/letsencrypt/pebble/v2/cmd/pebble, the
// version in go.mod's tool directive, once per test binary through
// `go tool -n pebble`, which keeps the executable in Go's build cache),
// starts it on loopback ports with a configuration in a temporary directory,
// and waits until its directory answers. Validation is real: Pebble's
// always-valid switch is off, its random validation sleeps are off, it
// rejects no good nonces and reuses no authorizations (so every order is
// validated).
//
// Pebble resolves every name it validates through Config.DNSServer (over
// TCP), and connects for HTTP-01 to the resolved address on
// Config.HTTPPort and for TLS-ALPN-01 on Config.TLSPort; DNS-01 reads TXT
// records through the same server. StartDNS is a small server that
// answers 127.0.0.1 for every name, for tests that need no DNS-01.
//
// A Pebble is meant to be shared by the tests of one binary (start it in
// TestMain or behind a sync.Once, stop it before goleak's check): it keeps
// its state in memory, so each Start is a new CA with a new root.
package pebbletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config says where Pebble's validation authority connects.
type Config struct {
	// HTTPPort is the port Pebble connects to for HTTP-01 challenges, on
	// the address the name resolves to. Zero means Pebble's 5002.
	HTTPPort int
	// TLSPort is the port Pebble connects to for TLS-ALPN-01 challenges.
	// Zero means Pebble's 5001.
	TLSPort int
	// DNSServer is the host:port of a DNS server (answering over TCP)
	// through which Pebble resolves the names it validates and reads
	// DNS-01 TXT records. Empty means the system resolver, which is
	// rarely what a test wants: see StartDNS.
	DNSServer string
	// Validity is the lifetime of the certificates Pebble issues (whole
	// seconds). Zero means 90 days.
	Validity time.Duration
}

// Pebble is a running Pebble. Its methods are safe to call concurrently.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:PORT/dir.
	DirectoryURL string
	// ManagementURL is Pebble's management interface (/roots/0 and so on).
	ManagementURL string
	// CAFile is the PEM file of the root (Pebble's minica) that signs the
	// certificate of DirectoryURL and ManagementURL: what an ACME client
	// must trust to talk to Pebble. CAPool holds the same root.
	CAFile string
	CAPool *x509.CertPool
	// IssuerRoot is the PEM of the root that issues the ACME certificates
	// (management /roots/0), written to IssuerRootFile too: what a client
	// of a server with a Pebble certificate must trust. IssuerPool holds
	// the same root.
	IssuerRoot     []byte
	IssuerRootFile string
	IssuerPool     *x509.CertPool

	dir  string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	once sync.Once
	err  error
}

var build struct {
	once sync.Once
	bin  string
	mod  string // the pebble module's directory
	err  error
}

// binary builds Pebble once per test binary and returns its executable
// and the pebble module's directory (for its test certificates).
func binary() (bin, modDir string, err error) {
	build.once.Do(func() {
		out, err := exec.Command("go", "tool", "-n", "pebble").Output()
		if err != nil {
			build.err = fmt.Errorf("pebbletest: go tool -n pebble: %w%s", err, stderrOf(err))
			return
		}
		build.bin = strings.TrimSpace(string(out))
		out, err = exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2").Output()
		if err != nil {
			build.err = fmt.Errorf("pebbletest: go list pebble: %w%s", err, stderrOf(err))
			return
		}
		build.mod = strings.TrimSpace(string(out))
	})
	return build.bin, build.mod, build.err
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return "\n" + string(ee.Stderr)
	}
	return ""
}

// Start builds Pebble if this test binary has not yet, starts it with cfg,
// and returns when its directory and management interface answer (within
// ctx, or a minute without a deadline). Stop ends it.
func Start(ctx context.Context, cfg Config) (*Pebble, error) {
	bin, modDir, err := binary()
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	certs := filepath.Join(modDir, "test", "certs")
	caPEM, err := os.ReadFile(filepath.Join(certs, "pebble.minica.pem"))
	if err != nil {
		return nil, fmt.Errorf("pebbletest: %w", err)
	}
	caPool := x509.NewCertPool()
	if !caPool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("pebbletest: no certificate in pebble.minica.pem")
	}
	// Ports are picked free and then handed to Pebble, which may lose one
	// to another process in between: a start that fails is tried again.
	var lastErr error
	for range 3 {
		p, err := start(bin, certs, cfg)
		if err != nil {
			return nil, err
		}
		p.CAFile = filepath.Join(certs, "pebble.minica.pem")
		p.CAPool = caPool
		if err = p.fetchRoot(ctx); err == nil {
			return p, nil
		}
		p.Stop()
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func start(bin, certs string, cfg Config) (*Pebble, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	validity := cfg.Validity
	if validity == 0 {
		validity = 90 * 24 * time.Hour
	}
	var c struct {
		Pebble map[string]any `json:"pebble"`
	}
	c.Pebble = map[string]any{
		"listenAddress":           "127.0.0.1:" + strconv.Itoa(ports[0]),
		"managementListenAddress": "127.0.0.1:" + strconv.Itoa(ports[1]),
		"certificate":             filepath.Join(certs, "localhost", "cert.pem"),
		"privateKey":              filepath.Join(certs, "localhost", "key.pem"),
		"httpPort":                orDefault(cfg.HTTPPort, 5002),
		"tlsPort":                 orDefault(cfg.TLSPort, 5001),
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{
			"default": map[string]any{
				"description":    "pebbletest",
				"validityPeriod": int64(validity / time.Second),
			},
		},
	}
	dir, err := os.MkdirTemp("", "pebbletest-")
	if err != nil {
		return nil, fmt.Errorf("pebbletest: %w", err)
	}
	js, _ := json.Marshal(c)
	conf := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(conf, js, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pebbletest: %w", err)
	}
	args := []string{"-config", conf}
	if cfg.DNSServer != "" {
		args = append(args, "-dnsserver", cfg.DNSServer)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = pebbleEnv()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pebbletest: start: %w", err)
	}
	p := &Pebble{
		DirectoryURL:  "https://127.0.0.1:" + strconv.Itoa(ports[0]) + "/dir",
		ManagementURL: "https://127.0.0.1:" + strconv.Itoa(ports[1]),
		dir:           dir, cmd: cmd, out: out, done: make(chan struct{}),
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pebbleEnv is this process's environment with Pebble's switches set for
// fast, deterministic and real validation.
func pebbleEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"PEBBLE_VA_NOSLEEP=1",      // no random sleep of up to 15 s before validating
		"PEBBLE_WFE_NONCEREJECT=0", // no made-up badNonce errors
		"PEBBLE_AUTHZREUSE=0",      // every order is validated again
	)
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pebbletest: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// fetchRoot waits for the directory and the management interface, and
// reads the issuing root.
func (p *Pebble) fetchRoot(ctx context.Context) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.CAPool}}}
	defer c.CloseIdleConnections()
	if _, err := p.get(ctx, c, p.DirectoryURL); err != nil {
		return err
	}
	root, err := p.get(ctx, c, p.ManagementURL+"/roots/0")
	if err != nil {
		return err
	}
	block, _ := pem.Decode(root)
	if block == nil {
		return fmt.Errorf("pebbletest: /roots/0 is not PEM: %q", root)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("pebbletest: /roots/0: %w", err)
	}
	p.IssuerRoot = root
	p.IssuerPool = x509.NewCertPool()
	p.IssuerPool.AddCert(cert)
	p.IssuerRootFile = filepath.Join(p.dir, "issuer-root.pem")
	if err := os.WriteFile(p.IssuerRootFile, root, 0o600); err != nil {
		return fmt.Errorf("pebbletest: %w", err)
	}
	return nil
}

// get polls url until it answers 200, Pebble exits, or ctx ends.
func (p *Pebble) get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && rerr == nil {
				return body, nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, body)
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("pebbletest: pebble exited (%v):\n%s", p.err, p.out.String())
		case <-ctx.Done():
			return nil, fmt.Errorf("pebbletest: %s did not answer: %w (last: %v)\n%s", url, ctx.Err(), err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop ends Pebble and removes its directory. It is idempotent.
func (p *Pebble) Stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		<-p.done
		os.RemoveAll(p.dir)
	})
}

var ordersRE = regexp.MustCompile(`There are now (\d+) orders in the db`)

// Orders returns how many ACME orders Pebble has received since it
// started (every new-order request, valid or not).
func (p *Pebble) Orders() int {
	m := ordersRE.FindAllStringSubmatch(p.out.String(), -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// Output returns what Pebble has logged so far (its validation attempts,
// for one: "Attempting to validate w/ HTTP: URL").
func (p *Pebble) Output() string { return p.out.String() }

// syncBuffer is a bytes.Buffer written by the child's output copier and
// read by tests; its mutex guards buf.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
