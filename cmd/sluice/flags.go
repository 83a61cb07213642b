package main

import (
	"fmt"
	"strconv"
	"strings"
)

// headerFlag collects repeatable -H 'Name: value' flags.
type headerFlag []string

func (h *headerFlag) String() string { return strings.Join(*h, ", ") }

func (h *headerFlag) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(strings.TrimSpace(name), " \t") {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	*h = append(*h, v)
	return nil
}

// sizeFlag is a byte count given as plain bytes or with a binary unit:
// 262144, 256KiB, 64MiB, 1GiB (KB, MB, GB and K, M, G mean the same).
type sizeFlag int64

func (s *sizeFlag) String() string {
	n := int64(*s)
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	return fmt.Sprint(n)
}

func (s *sizeFlag) Set(v string) error {
	num := strings.TrimRight(v, "KMGiBkmgib")
	unit := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(v[len(num):], "B"), "b"))
	shift := map[string]uint{"": 0, "K": 10, "KI": 10, "M": 20, "MI": 20, "G": 30, "GI": 30}
	sh, ok := shift[unit]
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if !ok || err != nil || n <= 0 || n > 1<<62>>sh {
		return fmt.Errorf("want a size such as 256MiB, 1GiB or 1048576, got %q", v)
	}
	*s = sizeFlag(n << sh)
	return nil
}

// cidrList splits --allow's comma-separated CIDRs (tunnels create and
// update, http), dropping blanks; "" is an empty list.
func cidrList(s string) []string {
	cidrs := []string{}
	for _, c := range strings.Split(s, ",") {
		if c = strings.TrimSpace(c); c != "" {
			cidrs = append(cidrs, c)
		}
	}
	return cidrs
}
