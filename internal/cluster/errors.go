package cluster

import "errors"

var (
	// ErrNoRoute: no live edge holds the tunnel (no claim, or the
	// holder's lease ran out).
	ErrNoRoute = errors.New("cluster: no edge holds the tunnel")
	// ErrUnavailable: the routing table cannot be read now (Redis is down
	// or slow); the cluster is degraded.
	ErrUnavailable = errors.New("cluster: routing table unavailable")
	// ErrBadSignature: a request between edges whose Sluice-Cluster field
	// is malformed, stale, or not signed with the cluster secret.
	ErrBadSignature = errors.New("cluster: bad signature")
	// ErrTaken: another edge holds the tunnel for another agent token.
	ErrTaken = errors.New("cluster: the tunnel is held at another edge with another token")
	// ErrClosed: the cluster was closed.
	ErrClosed = errors.New("cluster: closed")
)
