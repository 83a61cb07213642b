package cli

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "256MiB": 256 << 20, "1GiB": 1 << 30, "64mib": 64 << 20, "1.5GiB": 3 << 29,
		"32K": 32 << 10, "1MB": 1e6, "2 KiB": 2 << 10, "10B": 10,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1MiB", "lots", "1PiB", "1TiB", "12XB", "MiB", "1e30"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
	s := Size(256 << 20)
	if s.String() != "256MiB" {
		t.Errorf("Size(256 MiB).String() = %q", s.String())
	}
}
