package inspect

import (
	"context"
	"net/http"
)

// HandlerConfig configures the inspector's web server (Handler).
type HandlerConfig struct {
	// Upstream serves replays: the agent's handler, Agent.Handler for
	// sluice http and sluice demo, Managed.Handler (which picks the tunnel
	// by Host) for sluice agent. That handler holds a Wrap of its own (the
	// agent wraps its proxy when Config.Inspector is set); the API sends a
	// replay to in.Wrap(Upstream) with the withReplay mark in the
	// request's context, and the outer Wrap records it, once, marked as a
	// replay (the inner one sees the mark's Entry set and passes it
	// through), and leaves its Entry in the mark. Nil: replay answers 503.
	Upstream http.Handler
	// Version is sluice's version, named as the creator of HAR exports.
	// Default: the module's build version, or "dev".
	Version string
	// MaxReplayBody bounds the edited body of a replay. Default
	// DefaultMaxReplayBody (32 MiB).
	MaxReplayBody int
}

// Handler is the inspector's web server: the page at /, the JSON API
// under /api/ (see api.go), kept to the developer's own browser and tools
// (see guard).
func (in *Inspector) Handler(cfg HandlerConfig) http.Handler {
	mux := http.NewServeMux()
	in.routeAPI(mux, cfg)
	in.routePage(mux)
	return guard(mux)
}

// replayInfo travels in a replayed request's context: Wrap records the
// request as a replay of Of and leaves its Entry here.
type replayInfo struct {
	Of    string
	Entry *Entry // set by Wrap when it begins the record
}

type replayKey struct{}

// withReplay marks ctx's request as a replay of the request with ID of.
// Wrap looks for marks only while one is out: done, called once the
// replay's handler has returned, takes it back.
func (in *Inspector) withReplay(ctx context.Context, of string) (_ context.Context, _ *replayInfo, done func()) {
	info := &replayInfo{Of: of}
	in.replaying.Add(1)
	return context.WithValue(ctx, replayKey{}, info), info, func() { in.replaying.Add(-1) }
}

// replayOf returns the replay mark of ctx's request, or nil.
func replayOf(ctx context.Context) *replayInfo {
	info, _ := ctx.Value(replayKey{}).(*replayInfo)
	return info
}
