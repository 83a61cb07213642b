package benchmark

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, for the run's schema
	"github.com/sluicehq/sluice/internal/cluster"
)

// ClusterConfig says what the cluster run measures.
type ClusterConfig struct {
	// SluiceBin is the sluice binary run as the edges and the agent.
	SluiceBin string
	// Postgres is the PostgreSQL server the edges share (a schema of the
	// run's own is created in it and dropped at the end).
	Postgres string
	// RedisServer is the redis-server binary ("": from PATH, or
	// /usr/bin/redis-server).
	RedisServer string
	// Protocol is the tunnel's protocol (""; v2).
	Protocol string
	// Size is the bytes of each download (0: 1 GiB); the first forwarded
	// one is checked byte by byte.
	Size int64
	// Clients and Duration are the small-request run's (0: 50 clients,
	// 5 s).
	Clients  int
	Duration time.Duration
	// Rounds is how many times each path is measured, alternating (0: 3).
	Rounds int
	// Names and Workers are the routing-table run's (0: 50,000 names, 16
	// workers), for Duration.
	Names, Workers int
	// Progress, if set, receives one line per step.
	Progress io.Writer
}

// ClusterReport is the outcome of a cluster run. Its JSON form is "bench
// cluster --json".
type ClusterReport struct {
	Env       Env     `json:"env"`
	Protocol  string  `json:"protocol"`
	SizeBytes int64   `json:"size_bytes"`
	Clients   int     `json:"clients"`
	DurationS float64 `json:"duration_s"`
	// Local is a request to the edge that holds the agent; Forwarded the
	// same request to another edge, which forwards it (medians of the
	// rounds).
	Local     ClusterFigures `json:"local"`
	Forwarded ClusterFigures `json:"forwarded"`
	// ExactBytes is the size of the forwarded download checked byte by
	// byte against the upstream's.
	ExactBytes int64                `json:"exact_bytes"`
	Rounds     []ClusterRound       `json:"rounds"`
	Table      cluster.TableFigures `json:"table"`
	Error      string               `json:"error,omitempty"`
}

// ClusterFigures are one path's figures.
type ClusterFigures struct {
	DownloadMBps   float64 `json:"download_mb_per_s"`
	SmallReqPerSec float64 `json:"small_req_per_s"`
	SmallP50Ms     float64 `json:"small_p50_ms"`
	SmallP99Ms     float64 `json:"small_p99_ms"`
}

// ClusterRound is one measurement of one path.
type ClusterRound struct {
	Forwarded bool `json:"forwarded"`
	ClusterFigures
}

// Cluster measures a request forwarded between two edges of a cluster
// against the same request served by the edge that holds the agent: two
// "sluice edge --cluster" processes sharing a PostgreSQL schema and a
// redis-server started for the run, one "sluice http" connected to edge A;
// the local path is a request to A, the forwarded one the same request to
// B. Then the routing table's operations per second on that Redis.
func Cluster(ctx context.Context, cfg ClusterConfig) (rep *ClusterReport, err error) {
	if cfg.Protocol == "" {
		cfg.Protocol = "v2"
	}
	if cfg.Size == 0 {
		cfg.Size = 1 << 30
	}
	if cfg.Clients == 0 {
		cfg.Clients = 50
	}
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 3
	}
	if cfg.Names == 0 {
		cfg.Names = 50000
	}
	if cfg.Workers == 0 {
		cfg.Workers = 16
	}
	if cfg.SluiceBin == "" || cfg.Postgres == "" || cfg.Size < 0 || cfg.Clients < 0 || cfg.Duration < 0 || cfg.Rounds < 0 || cfg.Names < 0 || cfg.Workers < 0 {
		return nil, errors.New("benchmark: cluster: no sluice binary or PostgreSQL, or a negative size, count or duration")
	}
	if cfg.Protocol != "v1" && cfg.Protocol != "v2" {
		return nil, fmt.Errorf("benchmark: cluster: unknown protocol %q (want v1 or v2)", cfg.Protocol)
	}
	if err := raiseFileLimit(2*cfg.Clients + 256); err != nil {
		return nil, err
	}
	rep = &ClusterReport{
		Env:      Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
		Protocol: cfg.Protocol, SizeBytes: cfg.Size, Clients: cfg.Clients, DurationS: cfg.Duration.Seconds(),
	}
	fail := func(err error) (*ClusterReport, error) {
		rep.Error = err.Error()
		return rep, fmt.Errorf("benchmark: cluster: %w", err)
	}
	up, err := startUpstream()
	if err != nil {
		return fail(err)
	}
	defer up.close()
	redis, redisAddr, err := startRedis(ctx, cfg.RedisServer)
	if err != nil {
		return fail(err)
	}
	defer redis.stop()
	dsn, dropSchema, err := benchSchema(ctx, cfg.Postgres)
	if err != nil {
		return fail(err)
	}
	defer dropSchema()
	logf(cfg.Progress, "redis-server on %s, PostgreSQL schema ready", redisAddr)

	a, b, stop, err := startCluster(ctx, cfg, dsn, "redis://"+redisAddr+"/0", up.port)
	if err != nil {
		return fail(err)
	}
	bn := &bench{cfg: Config{Size: cfg.Size, Clients: cfg.Clients, Duration: cfg.Duration}, up: up, rep: &Report{}}
	for i := range cfg.Rounds {
		for _, fwd := range []bool{i%2 == 1, i%2 == 0} {
			if ctx.Err() != nil {
				stop()
				return fail(fmt.Errorf("interrupted: %w", ctx.Err()))
			}
			c := a
			if fwd {
				c = b
			}
			var r ClusterRound
			r.Forwarded = fwd
			d, err := bn.download(ctx, c)
			if err != nil {
				stop()
				return fail(fmt.Errorf("download (forwarded %v): %w", fwd, err))
			}
			s, err := bn.small(ctx, c)
			if err != nil {
				stop()
				return fail(fmt.Errorf("small requests (forwarded %v): %w", fwd, err))
			}
			r.DownloadMBps, r.SmallReqPerSec, r.SmallP50Ms, r.SmallP99Ms = d.MBps, s.ReqPerSec, s.P50Ms, s.P99Ms
			logf(cfg.Progress, "round %d, %s: download %.0f MB/s; small %.0f req/s, p50 %s ms, p99 %s ms",
				i+1, pathName(fwd), r.DownloadMBps, r.SmallReqPerSec, ms(r.SmallP50Ms), ms(r.SmallP99Ms))
			rep.Rounds = append(rep.Rounds, r)
		}
	}
	rep.Local, rep.Forwarded = clusterMedians(rep.Rounds, false), clusterMedians(rep.Rounds, true)
	if err := exactDownload(ctx, b, up, cfg.Size); err != nil {
		stop()
		return fail(fmt.Errorf("the forwarded download checked byte by byte: %w", err))
	}
	rep.ExactBytes = cfg.Size
	logf(cfg.Progress, "%s through the forwarded hop: byte-exact", byteSize(cfg.Size))
	if err := stop(); err != nil {
		return fail(err)
	}

	logf(cfg.Progress, "routing table: %d names, %d workers, %v per phase", cfg.Names, cfg.Workers, cfg.Duration)
	if rep.Table, err = cluster.MeasureTable(ctx, "redis://"+redisAddr+"/1", cfg.Names, cfg.Workers, cfg.Duration); err != nil {
		return fail(err)
	}
	return rep, nil
}

func pathName(forwarded bool) string {
	if forwarded {
		return "forwarded"
	}
	return "local"
}

// startCluster starts edges A and B and an agent on A, and returns the
// clients of the tunnel through each edge, once both answer.
func startCluster(ctx context.Context, cfg ClusterConfig, dsn, redisURL string, upPort int) (a, b *client, stop func() error, err error) {
	dir, err := os.MkdirTemp("", "sluice-bench-cluster-")
	if err != nil {
		return nil, nil, nil, err
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	t := &procTarget{cleanup: func() { os.RemoveAll(dir) }}
	tok := make([]byte, 16)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	maxStreams := strconv.Itoa(max(cfg.Clients, 1024) + 64)
	var addrs []string
	for _, name := range []string{"A", "B"} { // one at a time: A migrates the store
		port, err := freePort()
		if err != nil {
			t.stop()
			return nil, nil, nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		e, err := startChild("sluice edge "+name, cfg.SluiceBin, "edge", "--listen", addr, "--domain", "localhost", "--token", token,
			"--max-streams", maxStreams, "--max-streams-per-ip", maxStreams, "--store", dsn,
			"--cluster", redisURL, "--advertise", "http://"+addr, "--cluster-secret-file", secretFile)
		if err != nil {
			t.stop()
			return nil, nil, nil, err
		}
		t.children = append(t.children, e)
		t.base = "http://" + addr
		if err := waitReady(ctx, t, "/healthz", ""); err != nil {
			t.stop()
			return nil, nil, nil, fmt.Errorf("edge %s did not start: %w\n%s", name, err, t.output())
		}
		addrs = append(addrs, addr)
	}
	agent, err := startChild("sluice http", cfg.SluiceBin, "http", strconv.Itoa(upPort), "--edge", "http://"+addrs[0], "--token", token,
		"--name", "bench", "--quiet", "--protocol", cfg.Protocol)
	if err != nil {
		t.stop()
		return nil, nil, nil, err
	}
	t.children = append(t.children, agent)
	host := "bench.localhost"
	a, b = &client{base: "http://" + addrs[0], host: host}, &client{base: "http://" + addrs[1], host: host}
	for _, c := range []*client{a, b} {
		t.base, t.hostHdr = c.base, host
		if err := waitReady(ctx, t, "/small", host); err != nil {
			t.stop()
			return nil, nil, nil, fmt.Errorf("the tunnel did not come up through %s: %w\n%s", c.base, err, t.output())
		}
	}
	return a, b, t.stop, nil
}

// exactDownload downloads size bytes through c and compares them with
// what the upstream sent, byte by byte.
func exactDownload(ctx context.Context, c *client, up *upstream, size int64) error {
	req, err := c.request(ctx, http.MethodGet, "/download?n="+strconv.FormatInt(size, 10), nil)
	if err != nil {
		return err
	}
	tr := newTransport(1, 64<<10)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	buf := make([]byte, len(up.data)) // the upstream repeats data from its start
	var n int64
	for {
		m, err := io.ReadFull(resp.Body, buf)
		if m > 0 && !bytes.Equal(buf[:m], up.data[:m]) {
			return fmt.Errorf("the bytes after %d differ from the upstream's", n)
		}
		n += int64(m)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", n, err)
		}
	}
	if n != size {
		return fmt.Errorf("%d bytes, want %d", n, size)
	}
	return nil
}

func clusterMedians(rounds []ClusterRound, fwd bool) ClusterFigures {
	var dl, rps, p50, p99 []float64
	for _, r := range rounds {
		if r.Forwarded == fwd {
			dl, rps = append(dl, r.DownloadMBps), append(rps, r.SmallReqPerSec)
			p50, p99 = append(p50, r.SmallP50Ms), append(p99, r.SmallP99Ms)
		}
	}
	return ClusterFigures{median(dl), median(rps), median(p50), median(p99)}
}

// startRedis runs redis-server without persistence on a free loopback
// port and returns once it answers PING.
func startRedis(ctx context.Context, bin string) (*child, string, error) {
	if bin == "" {
		bin = "redis-server"
		if _, err := exec.LookPath(bin); err != nil {
			bin = "/usr/bin/redis-server"
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c, err := startChild("redis-server", bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err != nil {
		return nil, "", fmt.Errorf("%w (install redis-server, or pass --redis-server)", err)
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := c.alive(); err != nil {
			return nil, "", fmt.Errorf("%w\n%s", err, c.out.String())
		}
		if redisPing(addr) == nil {
			return c, addr, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.stop()
			return nil, "", fmt.Errorf("redis-server on %s does not answer", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "+PONG\r\n" {
		return fmt.Errorf("PING: %q %v", line, err)
	}
	return nil
}

// benchSchema creates a schema of the run's own on the PostgreSQL server
// at base and returns the URL that uses it, and a function that drops it.
func benchSchema(ctx context.Context, base string) (dsn string, drop func(), err error) {
	b := make([]byte, 6)
	rand.Read(b)
	schema := "sluice_bench_" + hex.EncodeToString(b)
	db, err := sql.Open("pgx", base)
	if err != nil {
		return "", nil, err
	}
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		db.Close()
		return "", nil, fmt.Errorf("PostgreSQL at --postgres: create schema: %w", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		db.Close()
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), func() {
		db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		db.Close()
	}, nil
}

// WriteTable prints the report: each figure local, forwarded, and the
// ratio; then the routing table's rates.
func (r *ClusterReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice cluster: a request forwarded between two edges vs served by the edge holding the agent; protocol %s, a %s download, %d clients' small requests for %.0f s, medians of %d rounds per path; loopback, %d CPUs, %s %s/%s\n\n",
		r.Protocol, byteSize(r.SizeBytes), r.Clients, r.DurationS, len(r.Rounds)/2, r.Env.CPUs, r.Env.GoVersion, r.Env.OS, r.Env.Arch)
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\tlocal\tforwarded\tforwarded / local\t\n")
	row := func(label string, l, f float64, s func(float64) string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t\n", label, s(l), s(f), f/l)
	}
	n0 := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	row("download MB/s", r.Local.DownloadMBps, r.Forwarded.DownloadMBps, n0)
	row("small requests/s", r.Local.SmallReqPerSec, r.Forwarded.SmallReqPerSec, n0)
	row("small p50 ms", r.Local.SmallP50Ms, r.Forwarded.SmallP50Ms, ms)
	row("small p99 ms", r.Local.SmallP99Ms, r.Forwarded.SmallP99Ms, ms)
	tw.Flush()
	if r.ExactBytes > 0 {
		fmt.Fprintf(&b, "\n%s through the forwarded hop checked byte by byte: exact\n", byteSize(r.ExactBytes))
	}
	if t := r.Table; t.Names > 0 {
		fmt.Fprintf(&b, "\nrouting table on one redis-server (%d names, %d workers):\n", t.Names, t.Workers)
		tw = tabwriter.NewWriter(&b, 0, 0, 3, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "claims/s\t%.0f\t\n", t.ClaimsPerSec)
		fmt.Fprintf(tw, "lookups/s (no cache)\t%.0f\t\n", t.LookupsPerSec)
		fmt.Fprintf(tw, "lookup p50 / p99 ms\t%s / %s\t\n", ms(t.LookupP50Ms), ms(t.LookupP99Ms))
		fmt.Fprintf(tw, "names renewed/s (whole renewals)\t%.0f\t\n", t.RenewedPerSec)
		fmt.Fprintf(tw, "one renewal of %d names, ms\t%.1f\t\n", t.Names, t.RenewalMs)
		fmt.Fprintf(tw, "Redis memory per route, bytes\t%.0f (MEMORY USAGE of one key: %d)\t\n", t.BytesPerRoute, t.RouteBytes)
		tw.Flush()
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "FAILED: %s\n", r.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
