// Package e2e holds end-to-end tests that run real programs: the built
// sluice binary, a headless Chromium, and sseload (internal/sseload), the
// SSE upstream and clients of the 10,000-stream test, which run as
// processes of their own. It has no non-test code.
package e2e
