// Command testreport reads "go test -json" on its standard input and prints
// the report of package testreport: CI runs
//
//	go test -race -count=1 -json ./... ./sse/... | go run ./internal/testreport/cmd/testreport
//
// It exits 1 if a test, a package or a build failed.
package main

import (
	"fmt"
	"os"

	"github.com/sluicehq/sluice/internal/testreport"
)

func main() {
	res, err := testreport.Report(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
	if !res.OK() {
		os.Exit(1)
	}
}
