package dnsprovider

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// ErrUnsupported is returned for a record a provider cannot handle, such
// as a record of another type than TXT given to the exec hook.
var ErrUnsupported = errors.New("dnsprovider: unsupported record")

// UpdateError is an RFC 2136 update (or the SOA query that finds the
// zone) that the server answered with an error or that TSIG refused.
type UpdateError struct {
	Op     string // "update", or "SOA query" (finding the zone)
	Server string // the server, HOST:PORT
	Zone   string // the zone updated, absolute ("" while finding it)
	Name   string // the record's absolute name
	Key    string // the TSIG key's name, "" when unsigned
	Rcode  int    // the DNS response code (dns.RcodeRefused...), or 0
	TSIG   int    // the TSIG error the server sent (dns.RcodeBadKey...), or 0
	Err    error  // a local cause, such as dns.ErrSig, or nil
}

func (e *UpdateError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dnsprovider: rfc2136: %s of %s", e.Op, e.Name)
	if e.Zone != "" {
		fmt.Fprintf(&b, " in zone %s", e.Zone)
	}
	fmt.Fprintf(&b, " at %s: ", e.Server)
	key := strings.TrimSuffix(e.Key, ".")
	switch {
	case e.TSIG == dns.RcodeBadKey:
		fmt.Fprintf(&b, "TSIG BADKEY: the server does not know the key %s (or not with that algorithm): declare it in the server's configuration, or fix --dns-tsig-key", key)
	case e.TSIG == dns.RcodeBadSig:
		fmt.Fprintf(&b, "TSIG BADSIG: the secret of key %s is not the server's: copy the secret from the server's key file into --dns-tsig-key", key)
	case e.TSIG == dns.RcodeBadTime:
		b.WriteString("TSIG BADTIME: this machine's clock and the server's differ by more than 5 minutes: fix the clocks (NTP)")
	case e.TSIG != 0:
		fmt.Fprintf(&b, "TSIG error %s from the server for key %s", rcodeName(e.TSIG), key)
	case e.Rcode == dns.RcodeRefused && e.Op != opUpdate:
		b.WriteString("REFUSED: the server serves no zone holding this name: point --dns-server at the zone's primary server, or give --dns-zone")
	case e.Rcode == dns.RcodeRefused && e.Key == "":
		b.WriteString("REFUSED: the server takes no unsigned updates for this zone: give --dns-tsig-key NAME:ALGORITHM:SECRET with a key its update-policy grants")
	case e.Rcode == dns.RcodeRefused:
		fmt.Fprintf(&b, "REFUSED: the server's policy does not let key %s update this name: grant it TXT records under the zone (BIND: update-policy { grant %s zonesub TXT; };), and check that updates are allowed for this zone at all", key, key)
	case e.Rcode == dns.RcodeNotAuth:
		b.WriteString("NOTAUTH: the server is not authoritative for the zone, or did not accept the key: point --dns-server at the zone's primary server and check --dns-zone and --dns-tsig-key")
	case e.Rcode == dns.RcodeNotZone:
		b.WriteString("NOTZONE: the name is not in the zone: fix --dns-zone (or leave it out to find the zone by an SOA query)")
	case e.Rcode == dns.RcodeServerFailure:
		b.WriteString("SERVFAIL: the server failed to apply the update: see the server's log (a zone file or journal it cannot write?)")
	case e.Rcode == dns.RcodeNotImplemented:
		b.WriteString("NOTIMP: the server does not take dynamic updates (RFC 2136): enable them for the zone, or use --acme-dns exec with a hook")
	case e.Rcode != 0:
		fmt.Fprintf(&b, "the server answered %s", rcodeName(e.Rcode))
	case e.Err != nil:
		fmt.Fprintf(&b, "%v (is --dns-server the zone's primary server, reachable over TCP?)", e.Err)
	default:
		b.WriteString("the server's answer names no zone holding this name: give --dns-zone")
	}
	return b.String()
}

func (e *UpdateError) Unwrap() error { return e.Err }

func rcodeName(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("rcode %d", rc)
}

// HookError is an exec hook that failed: it exited with another status
// than 0, could not start, or ran past its timeout.
type HookError struct {
	Command  string // the hook's path
	Action   string // "set" or "clear"
	FQDN     string // its second argument
	ExitCode int    // the exit status, -1 if it did not exit by itself
	TimedOut bool   // killed at the timeout
	Output   string // the end of what it wrote to stdout and stderr
	Err      error  // the cause (from os/exec, or the context)
}

func (e *HookError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dnsprovider: exec hook: %s %s %s: ", e.Command, e.Action, e.FQDN)
	switch {
	case e.TimedOut:
		b.WriteString("still running at the timeout, killed: the hook must exit once the record is set or cleared (see --dns-exec-timeout)")
	case e.ExitCode > 0:
		fmt.Fprintf(&b, "exit status %d: the hook failed", e.ExitCode)
	default:
		fmt.Fprintf(&b, "%v", e.Err)
	}
	if out := strings.TrimSpace(e.Output); out != "" {
		fmt.Fprintf(&b, "; its output:\n%s", out)
	} else if e.ExitCode > 0 {
		b.WriteString(" (it wrote nothing: make it say why on stderr)")
	}
	return b.String()
}

func (e *HookError) Unwrap() error { return e.Err }
