package pebbletest

import (
	"fmt"
	"net"
	"sync"

	"github.com/miekg/dns"
)

// DNS is a small DNS server on 127.0.0.1, over UDP and TCP on one port,
// that answers every A question with 127.0.0.1 and every other question
// with no records: enough for Pebble to reach a test server for HTTP-01
// and TLS-ALPN-01 under any name, without touching /etc/hosts. Close is
// safe to call concurrently and more than once.
type DNS struct {
	// Addr is the server's host:port, for Config.DNSServer.
	Addr string

	servers []*dns.Server
	once    sync.Once
	wg      sync.WaitGroup
}

// StartDNS starts a DNS server on a free loopback port.
func StartDNS() (*DNS, error) {
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	// The UDP and TCP sockets share a port: take a free UDP port and try
	// its TCP twin, a few times.
	for range 10 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pebbletest: dns: %w", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("pebbletest: dns: %w", err)
	}
	h := dns.HandlerFunc(answer)
	d := &DNS{Addr: ln.Addr().String(), servers: []*dns.Server{
		{PacketConn: pc, Handler: h},
		{Listener: ln, Handler: h},
	}}
	for _, s := range d.servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			s.ActivateAndServe()
		}()
		<-started
	}
	return d, nil
}

func answer(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	for _, qq := range q.Question {
		if qq.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
				A:   net.IPv4(127, 0, 0, 1),
			})
		}
	}
	w.WriteMsg(m)
}

// Close stops the server and waits for its goroutines.
func (d *DNS) Close() error {
	d.once.Do(func() {
		for _, s := range d.servers {
			s.Shutdown()
		}
		d.wg.Wait()
	})
	return nil
}
