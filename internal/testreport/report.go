// Package testreport turns the event stream of "go test -json" into what
// CI shows: the usual one line per package, the output of every failed
// test, and at the end the list of skipped tests with their reasons (a
// skipped test is not a passed one, and should be seen).
package testreport

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// event is one line of go test -json (cmd/test2json).
type event struct {
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string // build-output, build-fail
	FailedBuild string
}

// Result counts what a run did.
type Result struct {
	Passed, Failed, Skipped int
	FailedPackages          []string
}

type key struct{ pkg, test string }

// Report reads go test -json events from r and writes the report to w. It
// reports whether everything passed: no failed test, package or build.
func Report(r io.Reader, w io.Writer) (Result, error) {
	var res Result
	output := map[key][]string{}
	var skips []string
	failedPkg := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			fmt.Fprintf(w, "%s\n", line) // not an event (a vet or build message): show it
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "build-output":
			fmt.Fprint(w, e.Output)
		case "build-fail":
			failedPkg[e.ImportPath] = true
		case "output":
			output[k] = append(output[k], e.Output)
		case "pass":
			if e.Test == "" {
				fmt.Fprintf(w, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
			} else {
				res.Passed++
			}
			delete(output, k)
		case "skip":
			if e.Test == "" {
				fmt.Fprintf(w, "?   \t%s\t[no test files]\n", e.Package)
			} else {
				res.Skipped++
				skips = append(skips, fmt.Sprintf("%s %s: %s", e.Package, e.Test, reason(output[k])))
			}
			delete(output, k)
		case "fail":
			if e.Test == "" {
				failedPkg[e.Package] = true
				said := false
				for _, o := range output[k] {
					fmt.Fprint(w, o)
					said = said || strings.HasPrefix(o, "FAIL\t"+e.Package)
				}
				if !said {
					fmt.Fprintf(w, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
				}
			} else {
				res.Failed++
				for _, o := range output[k] {
					fmt.Fprint(w, o)
				}
			}
			delete(output, k)
		}
	}
	for p := range failedPkg {
		res.FailedPackages = append(res.FailedPackages, p)
	}
	slices.Sort(res.FailedPackages)
	slices.Sort(skips)
	fmt.Fprintf(w, "\n== %d tests passed, %d failed, %d skipped\n", res.Passed, res.Failed, res.Skipped)
	for _, s := range skips {
		fmt.Fprintf(w, "SKIP %s\n", s)
	}
	if len(res.FailedPackages) > 0 {
		fmt.Fprintf(w, "FAILED: %s\n", strings.Join(res.FailedPackages, " "))
	}
	return res, sc.Err()
}

// reason is the message a skipped test gave: its output without the
// "=== RUN" and "--- SKIP" lines.
func reason(lines []string) string {
	var out []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return "(no reason given)"
	}
	return strings.Join(out, " / ")
}

// OK reports whether the run passed.
func (r Result) OK() bool { return r.Failed == 0 && len(r.FailedPackages) == 0 }
