package main

import (
	"fmt"
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
