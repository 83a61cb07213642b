package dnsprovider

import "github.com/libdns/libdns"

// Provider is what RFC2136 and Exec are: a certmagic.DNSProvider (libdns's
// appender and deleter) whose configuration can be checked before use.
type Provider interface {
	libdns.RecordAppender
	libdns.RecordDeleter
	Validate() error
}

var (
	_ Provider = (*RFC2136)(nil)
	_ Provider = (*Exec)(nil)
)
