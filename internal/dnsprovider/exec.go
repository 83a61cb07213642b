package dnsprovider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// DefaultHookTimeout is how long a hook may run when Exec.Timeout is 0.
const DefaultHookTimeout = 2 * time.Minute

// hookOutputMax is how much of a hook's output an error keeps (its end).
const hookOutputMax = 4 << 10

// Exec sets and clears TXT records by running a hook command, so that any
// DNS host can be scripted. The contract (docs/dns-01.md):
//
//	COMMAND set   FQDN VALUE   add the TXT record FQDN with VALUE
//	COMMAND clear FQDN VALUE   remove that record (VALUE "": all the hook set at FQDN)
//
// FQDN is absolute with its final dot, such as
// "_acme-challenge.example.com."; VALUE is the record's text, unquoted.
// The hook runs without a shell, with the edge's environment plus
// SLUICE_DNS_ACTION, SLUICE_DNS_FQDN, SLUICE_DNS_VALUE, SLUICE_DNS_ZONE
// (the zone as found by the caller, such as "example.com.") and
// SLUICE_DNS_TTL (seconds), and with no standard input. "set" must add
// the record beside others of the same name (*.DOMAIN and DOMAIN are
// validated with two values at once); "clear" of a record that is absent
// must succeed. Exit status 0 means done; any other fails the challenge
// with the end of the hook's output (stdout and stderr) in the error. A
// hook still running at Timeout is killed, with its process group on
// Unix. The ACME side then waits until the record can be seen in DNS, so
// the hook need not wait for propagation.
type Exec struct {
	Command string        // the hook: a path, or a name looked up in $PATH
	Timeout time.Duration // per run; 0 means DefaultHookTimeout
	TTL     time.Duration // SLUICE_DNS_TTL for records without one; 0 means DefaultTTL
}

// Validate reports a hook that cannot be run.
func (p *Exec) Validate() error {
	if p.Command == "" {
		return errors.New("dnsprovider: exec hook: no command (--dns-exec)")
	}
	if _, err := exec.LookPath(p.Command); err != nil {
		return fmt.Errorf("dnsprovider: exec hook: %w (the hook must be an executable file)", err)
	}
	return nil
}

// AppendRecords runs the hook with "set" for each TXT record of recs.
func (p *Exec) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var done []libdns.Record
	for _, rec := range recs {
		rr := rec.RR()
		if rr.TTL <= 0 {
			rr.TTL = p.ttl()
		}
		if err := p.run(ctx, "set", zone, rr); err != nil {
			return done, err
		}
		done = append(done, rr)
	}
	return done, nil
}

// DeleteRecords runs the hook with "clear" for each TXT record of recs.
func (p *Exec) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var done []libdns.Record
	for _, rec := range recs {
		rr := rec.RR()
		if err := p.run(ctx, "clear", zone, rr); err != nil {
			return done, err
		}
		done = append(done, rr)
	}
	return done, nil
}

func (p *Exec) run(ctx context.Context, action, zone string, rr libdns.RR) error {
	fqdn := dns.Fqdn(libdns.AbsoluteName(rr.Name, zone))
	if !strings.EqualFold(rr.Type, "TXT") {
		return fmt.Errorf("%w: the exec hook sets TXT records only, not %s %s", ErrUnsupported, rr.Type, fqdn)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, p.Command, action, fqdn, rr.Data)
	cmd.Env = append(os.Environ(),
		"SLUICE_DNS_ACTION="+action,
		"SLUICE_DNS_FQDN="+fqdn,
		"SLUICE_DNS_VALUE="+rr.Data,
		"SLUICE_DNS_ZONE="+dns.Fqdn(zone),
		"SLUICE_DNS_TTL="+strconv.Itoa(int(rr.TTL/time.Second)),
	)
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second // then the pipes close even if a child keeps them
	killGroup(cmd)
	err := cmd.Run()
	if err == nil {
		return nil
	}
	e := &HookError{Command: p.Command, Action: action, FQDN: fqdn, ExitCode: -1, Output: out.String(), Err: err}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		e.Err = ctx.Err()
	case hctx.Err() != nil:
		e.TimedOut, e.Err = true, hctx.Err()
	case errors.As(err, &exit) && exit.Exited():
		e.ExitCode = exit.ExitCode()
	}
	return e
}

func (p *Exec) ttl() time.Duration {
	if p.TTL > 0 {
		return p.TTL
	}
	return DefaultTTL
}

// tail keeps the last hookOutputMax bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
	cut bool
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - hookOutputMax; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cut {
		return "[...]" + string(t.buf)
	}
	return string(t.buf)
}
