package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/cli"
)

// ACME conflicts with certificate files, and its other flags need it:
// usage errors, before anything listens.
func TestEdgeACMEFlagConflicts(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"with tls files", []string{"--acme-email", "a@b.c", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, "--tls-cert"},
		{"ca without email", []string{"--acme-ca", "https://ca.example/dir"}, "--acme-email"},
		{"ca root without email", []string{"--acme-ca-root", "roots.pem"}, "--acme-email"},
		{"http listen without https", []string{"--http-listen", "127.0.0.1:0"}, "--http-listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"edge", "--listen", "127.0.0.1:0", "--token", "T"}, tc.args...)
			var ue *cli.UsageError
			err := Run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a usage error naming %s", err, tc.want)
			}
		})
	}
}
