// Command sseload runs internal/sseload's modes (upstream, clients, push)
// for the e2e tests, built without -race: see that package.
//
//	sseload upstream|clients|push [flags]
package main

import (
	"fmt"
	"os"

	"github.com/sluicehq/sluice/internal/sseload"
)

func main() {
	if err := sseload.Main(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sseload:", err)
		os.Exit(1)
	}
}
