package tunnel

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// bulkUpstream serves /download?n=BYTES and counts the body of POST /upload.
var bulkUpstream = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, strconv.FormatInt(n, 10))
		return
	}
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	buf := make([]byte, 64<<10)
	for n > 0 {
		m := min(n, len(buf))
		if _, err := w.Write(buf[:m]); err != nil {
			return
		}
		n -= m
	}
})

// BenchmarkThroughput moves 64 MiB per op down and up, through a v1 tunnel
// (with extensions and plain) and directly, in the same run.
func BenchmarkThroughput(b *testing.B) {
	const size = 64 << 20
	targets := map[string]func(b *testing.B) string{
		"direct": func(b *testing.B) string {
			srv := httptest.NewServer(bulkUpstream)
			b.Cleanup(srv.Close)
			return srv.URL
		},
		"v1":       func(b *testing.B) string { return tunnelFrontB(b, allFeatures, bulkUpstream) },
		"v1-plain": func(b *testing.B) string { return tunnelFrontB(b, nil, bulkUpstream) },
		"v2":       func(b *testing.B) string { return tunnelFrontB(b, v2Features, bulkUpstream) },
	}
	for _, name := range []string{"direct", "v1", "v1-plain", "v2"} {
		b.Run("download/"+name, func(b *testing.B) {
			url := targets[name](b) + "/download?n=" + strconv.Itoa(size)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := http.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != size {
					b.Fatalf("%d bytes, %v", n, err)
				}
			}
		})
		if name == "v1-plain" {
			continue // plain agents take whole bodies only
		}
		b.Run("upload/"+name, func(b *testing.B) {
			url := targets[name](b) + "/upload"
			body := make([]byte, size)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := http.Post(url, "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(got) != strconv.Itoa(size) {
					b.Fatalf("upstream got %s bytes", got)
				}
			}
		})
	}
}

// BenchmarkSmallRequests: 50 concurrent clients of a 100-byte response,
// through v1 and v2 tunnels and directly, in the same run.
func BenchmarkSmallRequests(b *testing.B) {
	small := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "100")
		w.Write(bytes.Repeat([]byte("x"), 100))
	})
	for _, name := range []string{"direct", "v1", "v2"} {
		b.Run(name, func(b *testing.B) {
			var url string
			switch name {
			case "direct":
				srv := httptest.NewServer(small)
				b.Cleanup(srv.Close)
				url = srv.URL
			case "v1":
				url = tunnelFrontB(b, allFeatures, small)
			default:
				url = tunnelFrontB(b, v2Features, small)
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.SetParallelism(25) // 50 clients on 2 CPUs
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if n != 100 {
						b.Errorf("%d bytes", n)
						return
					}
				}
			})
		})
	}
}
