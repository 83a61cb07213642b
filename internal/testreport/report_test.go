package testreport

import (
	"os/exec"
	"strings"
	"testing"
)

// A real go test -json run of a small module with a passing, a failing
// and a skipped test.
func TestReportOfRealRun(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := exec.Command("sh", "-c", "cat > "+dir+"/"+name+" <<'EOF'\n"+text+"\nEOF").Run(); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/m\n\ngo 1.26")
	write("m_test.go", `package m

import "testing"

func TestPass(t *testing.T) {}
func TestFail(t *testing.T) { t.Log("the detail"); t.Fail() }
func TestSkip(t *testing.T) { t.Skip("needs a database") }`)
	cmd := exec.Command("go", "test", "-json", "./...")
	cmd.Dir = dir
	out, _ := cmd.Output() // go test exits 1: a test fails
	var report strings.Builder
	res, err := Report(strings.NewReader(string(out)), &report)
	if err != nil {
		t.Fatal(err)
	}
	got := report.String()
	t.Logf("report:\n%s", got)
	if res.Passed != 1 || res.Failed != 1 || res.Skipped != 1 || res.OK() {
		t.Errorf("result %+v, want 1 passed, 1 failed, 1 skipped, not OK", res)
	}
	for _, want := range []string{"the detail", "FAIL\texample.com/m", "SKIP example.com/m TestSkip: m_test.go:7: needs a database", "1 tests passed, 1 failed, 1 skipped"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(got, "TestPass") {
		t.Errorf("report shows the passing test's output")
	}
}
