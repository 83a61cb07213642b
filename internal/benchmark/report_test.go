package benchmark

import (
	"strings"
	"testing"
)

func TestWriteProtocolTable(t *testing.T) {
	type res struct{ proto, err, v string }
	var b strings.Builder
	writeProtocolTable(&b, []res{{"v1", "", "1.5"}, {"v2", "edge died\nmore", ""}},
		func(r *res) (string, string) { return r.proto, r.err },
		[]protocolRow[res]{{"value", func(r *res) string { return r.v }}}, 10)
	want := strings.Repeat(" ", 42) + "sluice v1 sluice v2 \n" +
		"value" + strings.Repeat(" ", 37) + "1.5       -         \n" +
		"\nsluice v2 FAILED: edge died\n"
	if b.String() != want {
		t.Fatalf("table:\n%q\nwant\n%q", b.String(), want)
	}
}
