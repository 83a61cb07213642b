package stats

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ten := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		name string
		s    []int64
		p    float64
		want int64
	}{
		{"p50 of ten", ten, 0.5, 5},
		{"p90 of ten", ten, 0.9, 9},
		{"p99 of ten", ten, 0.99, 10},
		{"p100 of ten", ten, 1, 10},
		{"p0 is the minimum", ten, 0, 1},
		{"above 1 is the maximum", ten, 1.5, 10},
		{"p99 of one", []int64{7}, 0.99, 7},
		{"p50 of two", []int64{3, 8}, 0.5, 3},
		{"none", nil, 0.99, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.s, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %d, want %d", tc.s, tc.p, got, tc.want)
			}
		})
	}
}

// The rank is ceil(p n) exactly, as integer arithmetic computes it, for
// every n up to 20,000: float rounding never moves it by one.
func TestPercentileRankExact(t *testing.T) {
	ranks := make([]int, 20000)
	for i := range ranks {
		ranks[i] = i + 1 // the value is its rank
	}
	for n := 1; n <= len(ranks); n++ {
		s := ranks[:n]
		for _, pct := range []int{1, 10, 50, 90, 95, 99, 100} {
			want := (n*pct + 99) / 100 // ceil(n pct / 100)
			if got := Percentile(s, float64(pct)/100); got != max(want, 1) {
				t.Fatalf("n=%d p%d: rank %d, want %d", n, pct, got, want)
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	d := make([]time.Duration, 1000)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Millisecond
	}
	r.Shuffle(len(d), func(i, j int) { d[i], d[j] = d[j], d[i] })
	s := Summarize(d)
	want := Summary[time.Duration]{N: 1000, Min: time.Millisecond, P50: 500 * time.Millisecond, P99: 990 * time.Millisecond, Max: time.Second}
	if s != want {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	if !slices.IsSorted(d) {
		t.Error("the samples are not sorted in place")
	}
	if z := Summarize([]float64(nil)); z != (Summary[float64]{}) {
		t.Errorf("Summarize(nil) = %+v", z)
	}
}
