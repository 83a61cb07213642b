// Package ratelog limits log lines that an outsider can repeat at will
// (bad frames, refused handshakes): each key gets Burst lines per Every;
// further lines in that window are counted, not written, and the next line
// written for the key says how many were left out. Callers count every
// event in full elsewhere (metrics); the log only has to show that it
// happens and an example.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults for a Limiter's zero fields.
const (
	DefaultEvery = time.Minute
	DefaultBurst = 5
	// maxKeys bounds the keys remembered; past it the table starts over.
	// Keys are kinds chosen by the program, never by a peer, so this is
	// a safety net only.
	maxKeys = 1024
)

// Limiter is a per-key window of log lines. The zero value is ready (with
// the defaults); a nil *Limiter logs everything. It is safe for concurrent
// use.
type Limiter struct {
	// Every is the window; zero means DefaultEvery (1 min).
	Every time.Duration
	// Burst is how many lines a key may write per window; zero means
	// DefaultBurst (5).
	Burst int

	mu   sync.Mutex
	keys map[string]*window
}

type window struct {
	start      time.Time
	written    int
	suppressed int64 // lines left out since the last one written
}

// Allow reports whether a line for key may be written now, and how many
// lines of key were left out before it (to be said in that line).
func (l *Limiter) Allow(key string) (ok bool, suppressed int64) {
	if l == nil {
		return true, 0
	}
	every, burst := l.Every, l.Burst
	if every <= 0 {
		every = DefaultEvery
	}
	if burst <= 0 {
		burst = DefaultBurst
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil || len(l.keys) >= maxKeys {
		l.keys = make(map[string]*window)
	}
	w := l.keys[key]
	if w == nil {
		w = &window{start: now}
		l.keys[key] = w
	}
	if now.Sub(w.start) >= every {
		w.start, w.written = now, 0
	}
	if w.written >= burst {
		w.suppressed++
		return false, 0
	}
	w.written++
	suppressed, w.suppressed = w.suppressed, 0
	return true, suppressed
}

// Log writes msg with args to log at level, if key has lines left in its
// window; the line then carries "suppressed"=N when N lines of key were
// left out before it.
func (l *Limiter) Log(log *slog.Logger, level slog.Level, key, msg string, args ...any) {
	ok, n := l.Allow(key)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(context.Background(), level, msg, args...)
}
