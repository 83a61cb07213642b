// Package agent is sluice's local side: it connects to an edge over one
// outbound WebSocket, registers a tunnel, and serves the requests that
// arrive through it with a reverse proxy to the local upstream. It
// reconnects by itself, with exponential backoff and full jitter, when the
// edge or the network goes away.
package agent
