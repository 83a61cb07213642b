package tunnel

import (
	"net/http"
	"strings"
)

// InternalPrefix starts the names of the fields the tunnel uses between
// edge and agent (Sluice-Upgrade, Sluice-Upgraded). They mean something to
// the tunnel only when the edge wrote them, so the edge removes every
// field with this prefix from public requests (a visitor could otherwise
// turn a request into an upgrade at the upstream) and from the responses
// it sends to visitors.
const InternalPrefix = "Sluice-"

// RemoveInternal deletes from h every field whose name starts with
// InternalPrefix, in any case.
func RemoveInternal(h http.Header) {
	for name := range h {
		if len(name) >= len(InternalPrefix) && strings.EqualFold(name[:len(InternalPrefix)], InternalPrefix) {
			delete(h, name)
		}
	}
}
