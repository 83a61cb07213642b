// Package edge is sluice's public side: one listener that routes requests
// by Host to tunnels (NAME.DOMAIN goes to tunnel NAME) and serves, on the
// apex domain, the agents' WebSocket endpoint /agent, /healthz, /metrics
// and a landing page.
//
// Each tunnel's public handler is a tunnel.Proxy (the reverse proxy both
// ends share) whose Transport is the agent's tunnel.Session, so the
// streaming rules hold as written there: headers flushed at once, every
// chunk flushed, X-Accel-Buffering: no on streamed responses, cancellation
// carried to the agent, and an upstream failure mid-body aborting the
// client's connection.
package edge
