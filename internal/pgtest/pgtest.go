// Package pgtest gives tests a PostgreSQL schema of their own, on the
// server named by SLUICE_TEST_POSTGRES (bash .ci/run starts one and sets
// it).
package pgtest

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
)

// Env names the PostgreSQL server, as a URL such as
// postgres://sluice:sluice@127.0.0.1:5432/postgres.
const Env = "SLUICE_TEST_POSTGRES"

// Schema creates a schema for tb and returns the server's URL with its
// search_path set to it; the schema is dropped when tb ends. Without Env,
// tb is skipped (visibly), except under CI (CI set), where it fails: CI
// must run the PostgreSQL tests.
func Schema(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(Env)
	if base == "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is not set: CI must run the PostgreSQL tests", Env)
		}
		tb.Skipf("%s not set: the PostgreSQL half is not run (bash .ci/run sets it up)", Env)
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "sluice_test_" + hex.EncodeToString(b)
	db, err := sql.Open("pgx", base)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := db.Exec(`CREATE SCHEMA ` + schema); err != nil {
		db.Close()
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		db.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
