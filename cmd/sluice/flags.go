package main

import (
	"flag"
	"fmt"
	"os"
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

// upstreamTLSFlags adds --upstream-insecure and --upstream-ca (http and
// agent) to fs. Their values, read after parsing, are the agent's
// UpstreamInsecure and UpstreamCA (the file's PEM).
func upstreamTLSFlags(fs *flag.FlagSet) func() (insecure bool, ca []byte, err error) {
	insecure := fs.Bool("upstream-insecure", false, "do not verify the certificate of an https:// local server (a self-signed one); default: verified")
	caFile := fs.String("upstream-ca", "", "PEM file of CA certificates trusted for an https:// local server, besides the system roots (default: the system roots alone)")
	return func() (bool, []byte, error) {
		if *caFile == "" {
			return *insecure, nil, nil
		}
		ca, err := os.ReadFile(*caFile)
		if err != nil {
			return false, nil, fmt.Errorf("--upstream-ca: %w", err)
		}
		return *insecure, ca, nil
	}
}

// quietFlag is --quiet of the commands that serve HTTP tunnels.
func quietFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("quiet", false, "print no line per request")
}
