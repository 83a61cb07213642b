// Package dnsprovider holds the DNS providers with which the edge solves
// ACME DNS-01 challenges for its wildcard certificate (*.DOMAIN and
// DOMAIN): RFC2136, dynamic updates signed with TSIG, which BIND, Knot
// and PowerDNS accept; and Exec, a hook command that sets and clears the
// TXT record, so that any DNS host with an API or a CLI can be scripted.
//
// Both implement libdns.RecordAppender and libdns.RecordDeleter, the
// interfaces certmagic's DNS01Solver takes (certmagic.DNSProvider).
// Their errors say what to fix: a server that refuses the update, a zone
// it does not serve, a TSIG key it does not know or whose secret differs,
// a hook that fails (with its output) or hangs.
//
// A provider's methods are safe to call concurrently; its fields must not
// change once it is in use.
package dnsprovider
