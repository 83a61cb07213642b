// Package cluster lets several edges behind a load balancer serve every
// tunnel, whichever edge holds its agent (design.md, "Beyond one machine").
//
// Two tables live in one Redis (a single server, not Redis Cluster: the
// lookup script reads a key it computes):
//
//   - the routing table, sluice:route:NAME -> "EDGEID GEN HOLDER": the
//     edge that holds the agent of tunnel NAME, with a lease (Config.Lease,
//     10 s by default), and a keyed digest of the agent's token (HOLDER):
//     an agent with the same token on another edge takes the name over,
//     one with another token is refused unless the store gives it the
//     name. The edge renews the leases of all the names it holds every
//     Lease/3 in one pipeline, and releases a name when its agent leaves
//     with a compare-and-delete: never another edge's claim, nor a newer
//     claim of its own (GEN is a fencing token, new for every claim). An
//     edge that dies loses its names when their leases run out.
//   - the peers table, sluice:edge:EDGEID -> the edge's advertise URL, with
//     a lease of its own, renewed in the same pipeline.
//
// An edge that receives a request for a tunnel it does not hold looks the
// name up (Lookup: one round trip, bounded by Config.Timeout, answered from
// a small cache for at most CacheTTL and never past the leases it read; a
// name nobody holds is remembered as such for NegativeTTL, and a claim
// anywhere ends both at every edge) and
// forwards the request to the holder's advertise URL over one pooled HTTP/2
// connection per peer (Transport), signed with the cluster secret (Sign,
// Verify): the receiving edge serves a signed request locally, never
// forwards it again, and takes the visitor's address from the signature.
//
// The edges tell each other what they cannot read from the tables over
// one pub/sub channel, sluice:events (bus.go): a claim (every edge drops
// its cached route, and the edge that held the name lets go of its agent),
// and the edge's own messages (Publish): push events for managed agents,
// retirements, changes of visitor rules. Pub/sub delivers to the edges
// subscribed at the time; an edge whose subscription broke hears Resync
// when it is back, and forgets what it may have missed.
//
// When Redis cannot be reached the cluster is degraded (Degraded): the edge
// keeps serving the tunnels it holds, lookups fail at once (ErrUnavailable)
// unless a route is cached, the change is logged once, and when Redis is
// back the renewal re-claims every name held here (a restarted, empty Redis
// gets the whole table back within Lease/3 from every edge).
package cluster
