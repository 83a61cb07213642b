package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/dnsprovider"
)

func TestDNSFlags(t *testing.T) {
	const secret = "c2VjcmV0c2VjcmV0c2VjcmV0"
	dir := t.TempDir()
	hookPath := filepath.Join(dir, "hook")
	os.WriteFile(hookPath, []byte("#!/bin/sh\n"), 0o755)
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte("acme:hmac-sha512:"+secret+"\n"), 0o600)
	t.Setenv("SLUICE_DNS_TSIG_KEY", "")

	parse := func(args ...string) (dnsprovider.Provider, []string, error) {
		fs := cli.NewFlagSet("edge", "", io.Discard)
		f := addDNSFlags(fs)
		if _, err := cli.ParseInterleaved(fs, args); err != nil {
			return nil, nil, err
		}
		return f.provider()
	}

	for _, tc := range []struct {
		args      []string
		want      dnsprovider.Provider
		resolvers []string
	}{
		{nil, nil, nil},
		{[]string{"--acme-dns", "rfc2136", "--dns-server", "ns1.example.com"},
			&dnsprovider.RFC2136{Server: "ns1.example.com"}, nil},
		{[]string{"--acme-dns", "rfc2136", "--dns-server", "127.0.0.1:5353", "--dns-zone", "example.com", "--dns-tsig-key", "acme:hmac-sha256:" + secret, "--dns-resolvers", "127.0.0.1:5353, 10.0.0.1"},
			&dnsprovider.RFC2136{Server: "127.0.0.1:5353", Zone: "example.com", Key: &dnsprovider.TSIGKey{Name: "acme", Algorithm: "hmac-sha256", Secret: secret}}, []string{"127.0.0.1:5353", "10.0.0.1"}},
		{[]string{"--acme-dns", "rfc2136", "--dns-server", "ns1", "--dns-tsig-key-file", keyFile},
			&dnsprovider.RFC2136{Server: "ns1", Key: &dnsprovider.TSIGKey{Name: "acme", Algorithm: "hmac-sha512", Secret: secret}}, nil},
		{[]string{"--acme-dns", "exec", "--dns-exec", hookPath},
			&dnsprovider.Exec{Command: hookPath, Timeout: dnsprovider.DefaultHookTimeout}, nil},
		{[]string{"--acme-dns", "exec", "--dns-exec", hookPath, "--dns-exec-timeout", "30s"},
			&dnsprovider.Exec{Command: hookPath, Timeout: 30 * time.Second}, nil},
	} {
		p, r, err := parse(tc.args...)
		if err != nil || !reflect.DeepEqual(p, tc.want) || !reflect.DeepEqual(r, tc.resolvers) {
			t.Errorf("%q: %#v %q %v; want %#v %q", tc.args, p, r, err, tc.want, tc.resolvers)
		}
	}

	t.Run("configure", func(t *testing.T) {
		fs := cli.NewFlagSet("edge", "", io.Discard)
		f := addDNSFlags(fs)
		if _, err := cli.ParseInterleaved(fs, []string{"--acme-dns", "exec", "--dns-exec", hookPath, "--dns-resolvers", "127.0.0.1:53", "--dns-propagation-timeout", "1m"}); err != nil {
			t.Fatal(err)
		}
		var c edge.ACMEConfig
		var ue *cli.UsageError
		if err := f.configure(&c); !errors.As(err, &ue) || !strings.Contains(err.Error(), "needs --acme-email") {
			t.Fatalf("without --acme-email: %v", err)
		}
		c.Email = "ops@example.com"
		if err := f.configure(&c); err != nil {
			t.Fatal(err)
		}
		if c.DNSProvider == nil || !reflect.DeepEqual(c.DNSResolvers, []string{"127.0.0.1:53"}) || c.DNSPropagationTimeout != time.Minute {
			t.Fatalf("%+v", c)
		}
	})

	t.Run("environment", func(t *testing.T) {
		t.Setenv("SLUICE_DNS_TSIG_KEY", "hmac-sha1:envkey:"+secret)
		p, _, err := parse("--acme-dns", "rfc2136", "--dns-server", "ns1")
		if err != nil || p.(*dnsprovider.RFC2136).Key.Name != "envkey" {
			t.Fatalf("%#v %v", p, err)
		}
	})

	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--dns-server", "ns1"}, "--dns-server needs a DNS provider"},
		{[]string{"--dns-exec", hookPath}, "--dns-exec needs a DNS provider"},
		{[]string{"--acme-dns", "route53"}, `"rfc2136" or "exec"`},
		{[]string{"--acme-dns", "rfc2136"}, "needs --dns-server"},
		{[]string{"--acme-dns", "rfc2136", "--dns-server", "ns1", "--dns-exec", hookPath}, "--dns-exec is for --acme-dns exec"},
		{[]string{"--acme-dns", "rfc2136", "--dns-server", "ns1", "--dns-tsig-key", "acme:" + secret}, "--dns-tsig-key: dnsprovider: TSIG key: want NAME:ALGORITHM:SECRET"},
		{[]string{"--acme-dns", "rfc2136", "--dns-server", "ns1", "--dns-tsig-key", "acme:hmac-md5:" + secret}, "hmac-md5"},
		{[]string{"--acme-dns", "rfc2136", "--dns-server", "ns1", "--dns-tsig-key", "x", "--dns-tsig-key-file", keyFile}, "one credential"},
		{[]string{"--acme-dns", "rfc2136", "--dns-server", "ns1", "--dns-zone", "bad..zone"}, "not a domain name"},
		{[]string{"--acme-dns", "exec"}, "needs --dns-exec CMD"},
		{[]string{"--acme-dns", "exec", "--dns-exec", hookPath, "--dns-server", "ns1"}, "--dns-server is for --acme-dns rfc2136"},
		{[]string{"--acme-dns", "exec", "--dns-exec", filepath.Join(dir, "absent")}, "executable"},
	} {
		_, _, err := parse(tc.args...)
		var ue *cli.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%q: err = %v, want a usage error saying %q", tc.args, err, tc.says)
		}
	}
}
