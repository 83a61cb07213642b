package main

import (
	"flag"
	"strings"
	"time"

	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/dnsprovider"
)

// dnsHelp is the part of sluice edge --help about DNS-01.
const dnsHelp = `
With a DNS provider (--acme-dns), the edge obtains one wildcard certificate
for *.DOMAIN (and one for DOMAIN) up front through DNS-01, by publishing a
TXT record at _acme-challenge.DOMAIN: every tunnel name is served with it,
with no ACME order per name and no name in Certificate Transparency logs.
"rfc2136" sends dynamic updates signed with a TSIG key to the zone's
primary server (BIND, Knot, PowerDNS); "exec" runs a hook for any other DNS
host, as "CMD set FQDN VALUE" and "CMD clear FQDN VALUE" (docs/dns-01.md
gives the contract, and a BIND update-policy).

  sluice edge --listen :443 --domain example.com --data /var/lib/sluice \
    --acme-email ops@example.com --acme-dns rfc2136 \
    --dns-server ns1.example.com:53 --dns-tsig-key-file /etc/sluice/tsig.key
`

// dnsFlags are the edge's DNS-01 flags: the provider that sets the TXT
// records of the wildcard certificate's challenges (docs/dns-01.md).
type dnsFlags struct {
	fs          *flag.FlagSet
	kind        *string
	server      *string
	zone        *string
	key         *cli.Secret
	hook        *string
	hookTimeout *time.Duration
	resolvers   *string
	propagation *time.Duration
}

func addDNSFlags(fs *flag.FlagSet) *dnsFlags {
	return &dnsFlags{
		fs: fs,
		kind: fs.String("acme-dns", "", `DNS `+"`PROVIDER`"+` for DNS-01, to obtain one wildcard certificate for *.DOMAIN and DOMAIN up front: "rfc2136" (dynamic updates to --dns-server: BIND, Knot, PowerDNS) or "exec" (a hook, --dns-exec, for any other DNS host); `+
			`default none: each tunnel name gets its own certificate on demand (an ACME order per name, published in Certificate Transparency logs)`),
		server: fs.String("dns-server", "", "rfc2136: the zone's primary DNS server, `HOST:PORT` (port 53 if none), which takes the updates over TCP"),
		zone:   fs.String("dns-zone", "", "rfc2136: the `ZONE` to update, such as example.com; default: the zone --dns-server names when asked for the SOA of _acme-challenge.DOMAIN"),
		key: cli.SecretFlag(fs, "dns-tsig-key", "SLUICE_DNS_TSIG_KEY",
			"rfc2136: TSIG key that signs the updates, `NAME:ALGORITHM:SECRET` (ALGORITHM hmac-sha256, or hmac-sha1/224/384/512; SECRET base64, as in the server's key file); without one, updates go unsigned"),
		hook:        fs.String("dns-exec", "", "exec: the hook `CMD`, run as CMD set|clear FQDN VALUE (no shell) to add or remove the TXT record FQDN (such as _acme-challenge.example.com.); exit status 0 means done; see docs/dns-01.md"),
		hookTimeout: fs.Duration("dns-exec-timeout", dnsprovider.DefaultHookTimeout, "exec: kill a hook still running after this long (the challenge fails)"),
		resolvers:   fs.String("dns-resolvers", "", "DNS servers, `HOST:PORT,...`, asked for the zone of _acme-challenge.DOMAIN and, before validation, whether the TXT record can be seen; default: the system's resolvers, then the zone's authoritative servers"),
		propagation: fs.Duration("dns-propagation-timeout", 2*time.Minute, "how long to wait for the TXT record to be seen before the challenge fails"),
	}
}

// configure sets the DNS-01 part of c, whose Email says whether ACME is on.
func (f *dnsFlags) configure(c *edge.ACMEConfig) error {
	p, resolvers, err := f.provider()
	if err != nil || p == nil {
		return err
	}
	if c.Email == "" {
		return cli.Usagef("edge: --acme-dns needs --acme-email (which turns ACME on)")
	}
	c.DNSProvider = p
	c.DNSResolvers = resolvers
	c.DNSPropagationTimeout = *f.propagation
	return nil
}

// provider returns the DNS-01 provider the flags describe, nil without
// --acme-dns, and the resolvers to check its records with.
func (f *dnsFlags) provider() (p dnsprovider.Provider, resolvers []string, err error) {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	key, keyFrom, err := f.key.Value()
	if err != nil {
		return nil, nil, err
	}
	only := func(kind string, names ...string) error {
		for _, n := range names {
			if set[n] {
				return cli.Usagef("edge: --%s is for --acme-dns %s", n, kind)
			}
		}
		return nil
	}
	switch *f.kind {
	case "":
		for _, n := range []string{"dns-server", "dns-zone", "dns-tsig-key", "dns-tsig-key-file", "dns-exec", "dns-exec-timeout", "dns-resolvers", "dns-propagation-timeout"} {
			if set[n] {
				return nil, nil, cli.Usagef("edge: --%s needs a DNS provider: --acme-dns rfc2136 or --acme-dns exec", n)
			}
		}
		return nil, nil, nil
	case "rfc2136":
		if err := only("exec", "dns-exec", "dns-exec-timeout"); err != nil {
			return nil, nil, err
		}
		if *f.server == "" {
			return nil, nil, cli.Usagef("edge: --acme-dns rfc2136 needs --dns-server HOST:PORT, the zone's primary server")
		}
		r := &dnsprovider.RFC2136{Server: *f.server, Zone: *f.zone}
		if key != "" {
			k, err := dnsprovider.ParseTSIGKey(key)
			if err != nil {
				return nil, nil, cli.Usagef("edge: %s: %v", keyFrom, err)
			}
			r.Key = &k
		}
		p = r
	case "exec":
		if err := only("rfc2136", "dns-server", "dns-zone", "dns-tsig-key", "dns-tsig-key-file"); err != nil {
			return nil, nil, err
		}
		if *f.hook == "" {
			return nil, nil, cli.Usagef("edge: --acme-dns exec needs --dns-exec CMD, the hook that sets and clears the TXT record")
		}
		p = &dnsprovider.Exec{Command: *f.hook, Timeout: *f.hookTimeout}
	default:
		return nil, nil, cli.Usagef(`edge: --acme-dns must be "rfc2136" or "exec", not %q`, *f.kind)
	}
	if err := p.Validate(); err != nil {
		return nil, nil, cli.Usagef("edge: --acme-dns %s: %v", *f.kind, err)
	}
	for r := range strings.SplitSeq(*f.resolvers, ",") {
		if r = strings.TrimSpace(r); r != "" {
			resolvers = append(resolvers, r)
		}
	}
	return p, resolvers, nil
}
