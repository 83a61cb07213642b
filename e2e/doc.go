// Package e2e holds end-to-end tests that run real programs: the built
// sluice binary and a headless Chromium. It has no non-test code.
package e2e
