package testtool

import (
	"testing"
	"time"
)

// Eventually polls cond every 5 ms until it holds, and fails the test if
// it still does not after a minute: the tests' one way to wait for an
// event they cannot be told of, with a ceiling generous enough for a busy
// machine.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("still not %s after a minute", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
