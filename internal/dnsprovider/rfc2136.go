package dnsprovider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// Defaults of RFC2136's zero fields.
const (
	DefaultTimeout = 10 * time.Second // one exchange with the server
	DefaultTTL     = time.Minute      // a record given without TTL
)

const (
	opUpdate   = "update"
	opFindZone = "SOA query"
	tsigFudge  = 300 // seconds of clock skew a signature tolerates (RFC 8945's recommendation)
)

// RFC2136 adds and removes records with dynamic updates (RFC 2136) sent
// over TCP to one server, the zone's primary, signed with a TSIG key.
// BIND, Knot and PowerDNS (with dnsupdate=yes) take them. The zero value
// is not usable: Server is required.
//
// The zone updated is Zone if set; otherwise the one the server names in
// its answer to an SOA query for the record's name (so the zone passed to
// AppendRecords and DeleteRecords only places relative names).
type RFC2136 struct {
	Server  string        // HOST:PORT of the primary server (port 53 if none)
	Zone    string        // the zone to update; "" to ask the server
	Key     *TSIGKey      // the key that signs updates; nil sends them unsigned
	Timeout time.Duration // per exchange with the server; 0 means DefaultTimeout
	TTL     time.Duration // for records without one; 0 means DefaultTTL
}

// Validate reports a configuration that cannot work.
func (p *RFC2136) Validate() error {
	if p.Server == "" {
		return errors.New("dnsprovider: rfc2136: no server: give the zone's primary server as HOST:PORT (--dns-server)")
	}
	if _, _, err := net.SplitHostPort(p.server()); err != nil {
		return fmt.Errorf("dnsprovider: rfc2136: server %q is not HOST:PORT: %w", p.Server, err)
	}
	if p.Zone != "" {
		if _, ok := dns.IsDomainName(p.Zone); !ok {
			return fmt.Errorf("dnsprovider: rfc2136: zone %q is not a domain name", p.Zone)
		}
	}
	if p.Key != nil {
		return p.Key.Validate()
	}
	return nil
}

// AppendRecords adds recs, named relative to zone, to the server's zone,
// one update per record, beside any records of the same name and type
// (two TXT records for _acme-challenge.DOMAIN live at once while *.DOMAIN
// and DOMAIN are validated). It returns the records added, with their
// TTL.
func (p *RFC2136) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var done []libdns.Record
	for _, rec := range recs {
		rr := rec.RR()
		if rr.TTL <= 0 {
			rr.TTL = p.ttl()
		}
		name := dns.Fqdn(libdns.AbsoluteName(rr.Name, zone))
		drr, err := toDNS(name, rr)
		if err != nil {
			return done, err
		}
		target, err := p.zoneOf(ctx, name)
		if err != nil {
			return done, err
		}
		m := new(dns.Msg)
		m.SetUpdate(target)
		m.Insert([]dns.RR{drr})
		if err := p.exchange(ctx, m, opUpdate, target, name); err != nil {
			return done, err
		}
		done = append(done, rr)
	}
	return done, nil
}

// DeleteRecords removes recs, named relative to zone. As libdns says,
// empty fields match anything: a record without Data removes every
// record of its name and type, one without Type every record of its name.
// Removing a record that is absent is not an error. It returns the
// records it asked the server to remove.
func (p *RFC2136) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var done []libdns.Record
	for _, rec := range recs {
		rr := rec.RR()
		name := dns.Fqdn(libdns.AbsoluteName(rr.Name, zone))
		target, err := p.zoneOf(ctx, name)
		if err != nil {
			return done, err
		}
		m := new(dns.Msg)
		m.SetUpdate(target)
		switch {
		case rr.Type == "":
			m.RemoveName([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: name}}})
		case rr.Data == "":
			t, ok := dns.StringToType[strings.ToUpper(rr.Type)]
			if !ok {
				return done, fmt.Errorf("%w: type %q", ErrUnsupported, rr.Type)
			}
			m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: name, Rrtype: t}}})
		default:
			drr, err := toDNS(name, rr)
			if err != nil {
				return done, err
			}
			m.Remove([]dns.RR{drr})
		}
		if err := p.exchange(ctx, m, opUpdate, target, name); err != nil {
			return done, err
		}
		done = append(done, rr)
	}
	return done, nil
}

// zoneOf returns the zone that holds name: Zone, or the owner of the SOA
// record in the server's answer to an SOA query for name (in the answer
// section at a zone's apex, in the authority section below it).
func (p *RFC2136) zoneOf(ctx context.Context, name string) (string, error) {
	if p.Zone != "" {
		return dns.Fqdn(p.Zone), nil
	}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSOA)
	m.RecursionDesired = false
	r, err := p.roundTrip(ctx, m, opFindZone, "", name)
	if err != nil {
		return "", err
	}
	if r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError {
		for _, sec := range [][]dns.RR{r.Answer, r.Ns} {
			for _, rr := range sec {
				if soa, ok := rr.(*dns.SOA); ok && dns.IsSubDomain(soa.Hdr.Name, name) {
					return strings.ToLower(soa.Hdr.Name), nil
				}
			}
		}
	}
	return "", p.fail(opFindZone, "", name, r.Rcode, 0, nil)
}

// exchange sends an update and turns any answer but NOERROR into an
// *UpdateError.
func (p *RFC2136) exchange(ctx context.Context, m *dns.Msg, op, zone, name string) error {
	r, err := p.roundTrip(ctx, m, op, zone, name)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess {
		return p.fail(op, zone, name, r.Rcode, 0, nil)
	}
	return nil
}

// roundTrip signs m, sends it over TCP and returns the server's answer,
// or an *UpdateError when there is none or its TSIG is in error.
func (p *RFC2136) roundTrip(ctx context.Context, m *dns.Msg, op, zone, name string) (*dns.Msg, error) {
	c := &dns.Client{Net: "tcp", Timeout: p.timeout()}
	if p.Key != nil {
		alg, _ := algorithm(p.Key.Algorithm)
		key := dns.Fqdn(p.Key.Name)
		c.TsigSecret = map[string]string{key: p.Key.Secret}
		m.SetTsig(key, alg, tsigFudge, time.Now().Unix())
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout())
		defer cancel()
	}
	r, _, err := c.ExchangeContext(ctx, m, p.server())
	if r != nil {
		// An unknown key or a bad signature comes back unsigned or signed
		// with an error code, which miekg/dns reports as a bad signature:
		// the server's TSIG error says more.
		if t := r.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
			return nil, p.fail(op, zone, name, r.Rcode, int(t.Error), err)
		}
		if err != nil && r.Rcode != dns.RcodeSuccess {
			return nil, p.fail(op, zone, name, r.Rcode, 0, err)
		}
	}
	if err != nil {
		return nil, p.fail(op, zone, name, 0, 0, err)
	}
	return r, nil
}

func (p *RFC2136) fail(op, zone, name string, rcode, tsig int, err error) error {
	e := &UpdateError{Op: op, Server: p.server(), Zone: zone, Name: name, Rcode: rcode, TSIG: tsig, Err: err}
	if p.Key != nil {
		e.Key = dns.Fqdn(p.Key.Name)
	}
	return e
}

func (p *RFC2136) server() string {
	if _, _, err := net.SplitHostPort(p.Server); err != nil {
		return net.JoinHostPort(strings.Trim(p.Server, "[]"), "53")
	}
	return p.Server
}

func (p *RFC2136) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultTimeout
}

func (p *RFC2136) ttl() time.Duration {
	if p.TTL > 0 {
		return p.TTL
	}
	return DefaultTTL
}

// toDNS makes the record rr, named name (absolute), a miekg/dns record.
// TXT data is taken as libdns gives it, unquoted and unescaped, and cut
// into strings of 255 bytes (escaped for miekg/dns, which reads its TXT
// strings in zone-file form); other types are parsed from their
// zone-file form.
func toDNS(name string, rr libdns.RR) (dns.RR, error) {
	ttl := uint32(rr.TTL / time.Second)
	if strings.EqualFold(rr.Type, "TXT") {
		var txt []string
		for s := rr.Data; ; s = s[255:] {
			chunk := s[:min(len(s), 255)]
			txt = append(txt, strings.ReplaceAll(chunk, `\`, `\\`))
			if len(s) <= 255 {
				break
			}
		}
		return &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl}, Txt: txt}, nil
	}
	out, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", name, ttl, rr.Type, rr.Data))
	if err != nil || out == nil {
		return nil, fmt.Errorf("%w: %s %s %q: %v", ErrUnsupported, name, rr.Type, rr.Data, err)
	}
	return out, nil
}
