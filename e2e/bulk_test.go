package e2e

import (
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// patternBlock repeats with a prime period, so that no reordering or loss
// of whole 32 KiB chunks or frames goes unnoticed.
var patternBlock = func() []byte {
	b := make([]byte, 65521)
	for i := range b {
		b[i] = byte(i*131>>3) ^ byte(i>>8)
	}
	return b
}()

// pattern is a deterministic byte stream: both ends can produce and check
// it without holding a gibibyte. Reads are copies, fast even under -race.
type pattern struct{ off int }

func (p *pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m := copy(b[n:], patternBlock[p.off:])
		n += m
		p.off = (p.off + m) % len(patternBlock)
	}
	return n, nil
}

// crc is CRC-32C, hardware-accelerated: a cheap digest of a gibibyte.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

func patternSum(n int64) uint32 {
	h := crc32.New(crcTable)
	io.CopyN(h, &pattern{}, n)
	return h.Sum32()
}

// rssKB returns a process's resident set in KiB, from /proc.
func rssKB(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return n
		}
	}
	return 0
}

// peakRSS samples the processes' RSS until stop is closed and returns the
// highest total seen.
func peakRSS(pids []int, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			var sum int64
			for _, pid := range pids {
				sum += rssKB(pid)
			}
			peak = max(peak, sum)
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// TestBulkTransfer: 1 GiB down and 1 GiB up through the tunnel, chunked
// (no Content-Length), byte-exact, with the edge's and agent's memory
// bounded however large the body.
func TestBulkTransfer(t *testing.T) { forProtocols(t, testBulkTransfer) }

func testBulkTransfer(t *testing.T, proto string) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	want := patternSum(size)
	up := newTestUpstream(t)
	up.mux.HandleFunc("GET /bulk", func(w http.ResponseWriter, r *http.Request) {
		// No Content-Length: a chunked response, flushed as it goes.
		io.CopyN(w, &pattern{}, size)
	})
	var gotUp atomic.Uint32
	up.mux.HandleFunc("POST /bulk", func(w http.ResponseWriter, r *http.Request) {
		h := crc32.New(crcTable)
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		gotUp.Store(h.Sum32())
		io.WriteString(w, strconv.FormatInt(n, 10))
	})
	e := startEdge(t, "T")
	a := startAgent(t, e, proto, "bulk", "T", up.port)
	c := tunnelClient(t, e.addr)
	url := e.publicURL("bulk") + "/bulk"
	pids := []int{e.cmd.Process.Pid, a.cmd.Process.Pid}
	base := rssKB(pids[0]) + rssKB(pids[1])

	var mu sync.Mutex
	report := func(what string, start time.Time, peak int64) {
		mu.Lock()
		defer mu.Unlock()
		secs := time.Since(start).Seconds()
		t.Logf("%s: %d MiB in %.2fs = %.0f MB/s; edge+agent RSS %d MiB before, peak %d MiB",
			what, size>>20, secs, float64(size)/secs/1e6, base>>10, peak>>10)
		// Bounded: the body is 1 GiB, the processes must not hold more
		// than a small fraction of it.
		if peak > base+200<<10 {
			t.Errorf("%s: edge+agent RSS grew from %d to %d MiB", what, base>>10, peak>>10)
		}
	}

	t.Run("download", func(t *testing.T) {
		stop := make(chan struct{})
		peak := peakRSS(pids, stop)
		start := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength != -1 || len(resp.TransferEncoding) == 0 {
			t.Errorf("want a chunked response, got Content-Length %d, Transfer-Encoding %v", resp.ContentLength, resp.TransferEncoding)
		}
		h := crc32.New(crcTable)
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		close(stop)
		if err != nil || n != size || h.Sum32() != want {
			t.Fatalf("downloaded %d of %d bytes (err %v), digest match %v", n, size, err, h.Sum32() == want)
		}
		report("download", start, <-peak)
	})
	t.Run("upload", func(t *testing.T) {
		stop := make(chan struct{})
		peak := peakRSS(pids, stop)
		start := time.Now()
		// An io.Reader of unknown length: sent chunked.
		req, _ := http.NewRequest("POST", url, io.LimitReader(&pattern{}, size))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		close(stop)
		if resp.StatusCode != 200 || string(body) != strconv.FormatInt(size, 10) {
			t.Fatalf("upload: %d %q", resp.StatusCode, body)
		}
		if gotUp.Load() != want {
			t.Fatal("the upstream received different bytes")
		}
		report("upload", start, <-peak)
	})
}
