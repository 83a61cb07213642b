package edge_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/sluicehq/sluice/internal/cluster"
	"go.uber.org/goleak"
)

// certmagicGlobals are certmagic's process-wide goroutines: a rate limiter
// per ACME account that lives as long as the process, and a lock file's
// refresher that notices its lock was released up to 5 s later.
var certmagicGlobals = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
	goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
}

// TestMain runs the tests, stops the Pebbles the ACME tests started, and
// fails the package if a test leaves a goroutine behind.
func TestMain(m *testing.M) {
	cluster.QuietRedis()
	code := m.Run()
	stopPebbles()
	if code == 0 {
		if err := goleak.Find(certmagicGlobals...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
