package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// 10,000 lines of one key in a minute write Burst lines; the first line of
// the next window says how many were left out. Another key has its own
// window.
func TestLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		l := &Limiter{Every: time.Minute, Burst: 3}
		for range 10000 {
			l.Log(log, slog.LevelWarn, "bad", "bad frame")
		}
		l.Log(log, slog.LevelWarn, "other", "other thing")
		if n := strings.Count(buf.String(), "bad frame"); n != 3 {
			t.Fatalf("%d lines written in one window, want 3:\n%s", n, buf.String())
		}
		if n := strings.Count(buf.String(), "other thing"); n != 1 {
			t.Fatalf("another key was limited by the first: %d lines", n)
		}
		time.Sleep(time.Minute)
		buf.Reset()
		l.Log(log, slog.LevelWarn, "bad", "bad frame")
		if !strings.Contains(buf.String(), "suppressed=9997") {
			t.Fatalf("the next window's line does not count what was left out: %q", buf.String())
		}
	})
}

func TestNilLimiterLogsAll(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var l *Limiter
	for range 10 {
		l.Log(log, slog.LevelInfo, "k", "line")
	}
	if n := strings.Count(buf.String(), "line"); n != 10 {
		t.Fatalf("nil limiter wrote %d of 10", n)
	}
}
