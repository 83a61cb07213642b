package benchmark

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
)

// medianResult is one target's results over several rounds made into one:
// every figure the median of its values (medianTree), each on its own but
// for a split (total, edge, agent), which is the whole split of one round,
// so that its parts still add up. Names, notes and process IDs are the
// first round's. The rounds have no error.
func medianResult(rounds []TargetResult) (TargetResult, error) {
	trees := make([]any, len(rounds))
	for i, r := range rounds {
		b, err := json.Marshal(r)
		if err == nil {
			err = json.Unmarshal(b, &trees[i])
		}
		if err != nil {
			return TargetResult{}, fmt.Errorf("benchmark: the medians of %s: %w", r.Name, err)
		}
	}
	var out TargetResult
	b, err := json.Marshal(medianTree(trees, ""))
	if err == nil {
		err = json.Unmarshal(b, &out)
	}
	if err != nil {
		return TargetResult{}, fmt.Errorf("benchmark: the medians of %s: %w", rounds[0].Name, err)
	}
	return out, nil
}

// medianTree walks values found at the same place in decoded JSON
// documents. Numbers give their lower median (a value one round measured:
// counts stay whole, and a figure equals the total of the split it was
// taken with); an object with a "total" is the object of the round whose
// total is that median; other objects and arrays of one length are walked
// field by field; anything else (and the key "pid") is the first value.
func medianTree(vs []any, key string) any {
	switch first := vs[0].(type) {
	case float64:
		if key == "pid" {
			return first
		}
		_, v := lowerMedian(vs, func(v any) (float64, bool) { f, ok := v.(float64); return f, ok })
		return v
	case map[string]any:
		if _, ok := first["total"].(float64); ok {
			i, _ := lowerMedian(vs, func(v any) (float64, bool) {
				o, _ := v.(map[string]any)
				f, ok := o["total"].(float64)
				return f, ok
			})
			return vs[i]
		}
		out := make(map[string]any, len(first))
		for k := range first {
			var sub []any
			for _, v := range vs {
				if o, ok := v.(map[string]any); ok {
					if x, ok := o[k]; ok {
						sub = append(sub, x)
					}
				}
			}
			out[k] = medianTree(sub, k)
		}
		return out
	case []any:
		out := make([]any, len(first))
		for i := range first {
			var sub []any
			for _, v := range vs {
				if a, ok := v.([]any); ok && len(a) == len(first) {
					sub = append(sub, a[i])
				}
			}
			out[i] = medianTree(sub, key)
		}
		return out
	}
	return vs[0]
}

// lowerMedian returns the index in vs and the value of the lower median of
// the numbers num finds in vs (the first value when it finds none).
func lowerMedian(vs []any, num func(any) (float64, bool)) (int, float64) {
	type iv struct {
		i int
		v float64
	}
	var all []iv
	for i, v := range vs {
		if f, ok := num(v); ok {
			all = append(all, iv{i, f})
		}
	}
	if len(all) == 0 {
		return 0, 0
	}
	slices.SortStableFunc(all, func(a, b iv) int { return cmp.Compare(a.v, b.v) })
	m := all[(len(all)-1)/2]
	return m.i, m.v
}
