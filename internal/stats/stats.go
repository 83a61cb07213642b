// Package stats holds the summary figures that the benchmarks and the load
// tests report: nearest-rank percentiles of latencies and delays. It is the
// one place they are computed.
package stats

import (
	"cmp"
	"math"
	"slices"
)

// Percentile returns the nearest-rank p-quantile of sorted, which must be
// in ascending order: the smallest value such that at least a fraction p
// of the values are at most it (p 0.99: the ceil(0.99 n)-th value). p is
// clamped to (0, 1]; an empty slice gives the zero value.
func Percentile[T cmp.Ordered](sorted []T, p float64) T {
	if len(sorted) == 0 {
		var zero T
		return zero
	}
	// The small tolerance keeps 0.99 × 100 at rank 99 where the product
	// of floats lands a hair above the integer.
	rank := int(math.Ceil(float64(len(sorted))*p - 1e-9))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Summary is the usual summary of a set of samples.
type Summary[T cmp.Ordered] struct {
	N             int
	Min, P50, P99 T
	Max           T
}

// Summarize sorts samples in place and returns their summary; all zero
// for no samples.
func Summarize[T cmp.Ordered](samples []T) Summary[T] {
	if len(samples) == 0 {
		return Summary[T]{}
	}
	slices.Sort(samples)
	return Summary[T]{
		N:   len(samples),
		Min: samples[0],
		P50: Percentile(samples, 0.50),
		P99: Percentile(samples, 0.99),
		Max: samples[len(samples)-1],
	}
}
