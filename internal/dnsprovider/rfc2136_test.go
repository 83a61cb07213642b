package dnsprovider_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/sluicehq/sluice/internal/bindtest"
	"github.com/sluicehq/sluice/internal/dnsprovider"
)

func key(k bindtest.Key) *dnsprovider.TSIGKey {
	return &dnsprovider.TSIGKey{Name: k.Name, Algorithm: k.Algorithm, Secret: k.Secret}
}

func txt(name, value string) libdns.Record {
	return libdns.TXT{Name: name, Text: value}
}

// TestRFC2136 adds and removes TXT records in a zone served by BIND, as
// certmagic's DNS01Solver does (a name relative to the zone it found),
// and reads them back from BIND.
func TestRFC2136(t *testing.T) {
	ns := bindtest.Start(t, bindtest.Config{Zone: "sluice.test"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("append and delete, zone from SOA", func(t *testing.T) {
		p := &dnsprovider.RFC2136{Server: ns.Addr, Key: key(ns.Key)}
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		// *.DOMAIN and DOMAIN: two values at one name, at once.
		got, err := p.AppendRecords(ctx, "sluice.test.", []libdns.Record{txt("_acme-challenge", "one"), txt("_acme-challenge", "two")})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].RR().TTL != dnsprovider.DefaultTTL || got[1].RR().Data != "two" {
			t.Fatalf("appended %v", got)
		}
		assertTXT(t, ns, "_acme-challenge", "one", "two")
		if _, err := p.DeleteRecords(ctx, "sluice.test.", got[:1]); err != nil {
			t.Fatal(err)
		}
		assertTXT(t, ns, "_acme-challenge", "two")
		if _, err := p.DeleteRecords(ctx, "sluice.test.", got[1:]); err != nil {
			t.Fatal(err)
		}
		assertTXT(t, ns, "_acme-challenge")
		// Deleting what is gone is no error (cleanup may repeat).
		if _, err := p.DeleteRecords(ctx, "sluice.test.", got[1:]); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("zone given, name below it, long value", func(t *testing.T) {
		p := &dnsprovider.RFC2136{Server: ns.Addr, Zone: "sluice.test", Key: key(ns.Key), TTL: 30 * time.Second}
		long := strings.Repeat("0123456789", 40) // 400 bytes: two TXT strings
		// The caller's zone only places the relative name.
		got, err := p.AppendRecords(ctx, "deep.sluice.test.", []libdns.Record{txt("_acme-challenge.a", long)})
		if err != nil {
			t.Fatal(err)
		}
		assertTXT(t, ns, "_acme-challenge.a.deep", long)
		if ttl := got[0].RR().TTL; ttl != 30*time.Second {
			t.Fatalf("TTL %v", ttl)
		}
		// A record without data removes the name's TXT records.
		if _, err := p.DeleteRecords(ctx, "sluice.test.", []libdns.Record{libdns.RR{Name: "_acme-challenge.a.deep", Type: "TXT"}}); err != nil {
			t.Fatal(err)
		}
		assertTXT(t, ns, "_acme-challenge.a.deep")
	})

	t.Run("algorithms", func(t *testing.T) {
		for _, a := range bindtest.Algorithms {
			t.Run(a, func(t *testing.T) {
				k, err := dnsprovider.ParseTSIGKey(ns.Keys[a].String())
				if err != nil {
					t.Fatal(err)
				}
				p := &dnsprovider.RFC2136{Server: ns.Addr, Key: &k}
				got, err := p.AppendRecords(ctx, "sluice.test.", []libdns.Record{txt("_alg", a)})
				if err != nil {
					t.Fatal(err)
				}
				assertTXT(t, ns, "_alg", a)
				if _, err := p.DeleteRecords(ctx, "sluice.test.", got); err != nil {
					t.Fatal(err)
				}
				assertTXT(t, ns, "_alg")
			})
		}
	})

	refused := []struct {
		name  string
		p     dnsprovider.RFC2136
		rec   string // absolute name appended
		rcode int
		tsig  int
		says  []string
	}{
		{"wrong secret", dnsprovider.RFC2136{Key: &dnsprovider.TSIGKey{Name: ns.Key.Name, Algorithm: ns.Key.Algorithm, Secret: ns.Other.Secret}},
			"_acme-challenge.sluice.test.", dns.RcodeNotAuth, dns.RcodeBadSig, []string{"BADSIG", "secret of key sluice-acme is"}},
		{"wrong secret, zone given", dnsprovider.RFC2136{Zone: "sluice.test", Key: &dnsprovider.TSIGKey{Name: ns.Key.Name, Algorithm: ns.Key.Algorithm, Secret: ns.Other.Secret}},
			"_acme-challenge.sluice.test.", dns.RcodeNotAuth, dns.RcodeBadSig, []string{"update of", "BADSIG"}},
		{"unknown key", dnsprovider.RFC2136{Key: &dnsprovider.TSIGKey{Name: "nobody", Algorithm: "hmac-sha256", Secret: ns.Key.Secret}},
			"_acme-challenge.sluice.test.", dns.RcodeNotAuth, dns.RcodeBadKey, []string{"BADKEY", "does not know the key nobody "}},
		{"wrong algorithm", dnsprovider.RFC2136{Key: &dnsprovider.TSIGKey{Name: ns.Key.Name, Algorithm: "hmac-sha512", Secret: ns.Key.Secret}},
			"_acme-challenge.sluice.test.", dns.RcodeNotAuth, dns.RcodeBadKey, []string{"BADKEY", "algorithm"}},
		{"key not granted", dnsprovider.RFC2136{Key: key(ns.Other)},
			"_acme-challenge.sluice.test.", dns.RcodeRefused, 0, []string{"REFUSED", "update-policy { grant sluice-other zonesub TXT; }"}},
		{"unsigned", dnsprovider.RFC2136{},
			"_acme-challenge.sluice.test.", dns.RcodeRefused, 0, []string{"REFUSED", "--dns-tsig-key"}},
		{"zone not served", dnsprovider.RFC2136{Key: key(ns.Key)},
			"_acme-challenge.elsewhere.test.", dns.RcodeRefused, 0, []string{"SOA query", "serves no zone", "--dns-zone"}},
		{"wrong zone given", dnsprovider.RFC2136{Key: key(ns.Key), Zone: "elsewhere.test"},
			"_acme-challenge.elsewhere.test.", dns.RcodeNotAuth, 0, []string{"NOTAUTH", "primary"}},
		{"name outside the zone given", dnsprovider.RFC2136{Key: key(ns.Key), Zone: "sluice.test"},
			"_acme-challenge.elsewhere.test.", dns.RcodeNotZone, 0, []string{"NOTZONE", "--dns-zone"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.Server = ns.Addr
			_, err := p.AppendRecords(ctx, "", []libdns.Record{txt(tc.rec, "x")})
			t.Log(err)
			var ue *dnsprovider.UpdateError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want an *UpdateError", err)
			}
			if ue.Rcode != tc.rcode || ue.TSIG != tc.tsig {
				t.Errorf("rcode %s, TSIG error %s; want %s, %s", dns.RcodeToString[ue.Rcode], dns.RcodeToString[ue.TSIG], dns.RcodeToString[tc.rcode], dns.RcodeToString[tc.tsig])
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			assertTXT(t, ns, "_acme-challenge")
		})
	}

	t.Run("no server", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		p := &dnsprovider.RFC2136{Server: addr, Key: key(ns.Key)}
		_, err = p.AppendRecords(ctx, "sluice.test.", []libdns.Record{txt("_acme-challenge", "x")})
		if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "--dns-server") {
			t.Fatalf("err = %v, want one naming %s and --dns-server", err, addr)
		}
	})
}

func assertTXT(t *testing.T, ns *bindtest.Server, name string, want ...string) {
	t.Helper()
	got := ns.TXT(t, name)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("TXT %s = %q, want %q", name, got, want)
	}
}

func TestParseTSIGKey(t *testing.T) {
	const secret = "c2VjcmV0c2VjcmV0c2VjcmV0"
	for _, tc := range []struct {
		in   string
		want dnsprovider.TSIGKey
		err  string
	}{
		{in: "acme:hmac-sha256:" + secret, want: dnsprovider.TSIGKey{Name: "acme", Algorithm: "hmac-sha256", Secret: secret}},
		{in: "acme.example.com:HMAC-SHA512:" + secret, want: dnsprovider.TSIGKey{Name: "acme.example.com", Algorithm: "hmac-sha512", Secret: secret}},
		{in: "hmac-sha1:acme:" + secret, want: dnsprovider.TSIGKey{Name: "acme", Algorithm: "hmac-sha1", Secret: secret}}, // nsupdate -y
		{in: "acme:" + secret, err: "NAME:ALGORITHM:SECRET"},
		{in: "acme:hmac-md5:" + secret, err: `algorithm "hmac-md5"`},
		{in: "acme:hmac-sha256:not base64!", err: "not base64"},
		{in: "acme:hmac-sha256:", err: "NAME:ALGORITHM:SECRET"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := dnsprovider.ParseTSIGKey(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("= %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
