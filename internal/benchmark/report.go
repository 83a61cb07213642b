package benchmark

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ratioRow is one line of a table with a column per target: a figure of
// every target, shown with its ratio to the baseline's.
type ratioRow[R any] struct {
	label string
	get   func(*R) (float64, bool)
	fmt   func(float64) string
}

// writeRatioTable writes rows with a column per result (named by name),
// each figure followed by its ratio to base's when base (one of results,
// or nil) has it; missing gives the cell of a figure a result lacks.
func writeRatioTable[R any](b *strings.Builder, results []R, name func(*R) string, base *R, rows []ratioRow[R], missing func(r *R, label string) string) {
	tw := tabwriter.NewWriter(b, 0, 0, 3, ' ', 0)
	for i := range results {
		fmt.Fprintf(tw, "\t%s", name(&results[i]))
	}
	fmt.Fprintln(tw)
	for _, row := range rows {
		fmt.Fprint(tw, row.label)
		for i := range results {
			r := &results[i]
			v, ok := row.get(r)
			if !ok {
				fmt.Fprintf(tw, "\t%s", missing(r, row.label))
				continue
			}
			cell := row.fmt(v)
			if base != nil && r != base {
				if bv, bok := row.get(base); bok && bv != 0 {
					cell += fmt.Sprintf(" (%s×)", ratio(v/bv))
				}
			}
			fmt.Fprintf(tw, "\t%s", cell)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func (r *Report) rows() []ratioRow[TargetResult] {
	mbps := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	kb := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	sse := func(which func(*TargetResult) *SSEResult, p99 bool) func(*TargetResult) (float64, bool) {
		return func(t *TargetResult) (float64, bool) {
			s := which(t)
			if s == nil {
				return 0, false
			}
			if p99 {
				return s.P99Ms, true
			}
			return s.P50Ms, true
		}
	}
	one := func(t *TargetResult) *SSEResult { return t.SSEOne }
	many := func(t *TargetResult) *SSEResult { return t.SSEMany }
	paced := func(t *TargetResult) *SSEResult { return t.SSEPaced }
	events := func(which func(*TargetResult) *SSEResult) func(*TargetResult) (float64, bool) {
		return func(t *TargetResult) (float64, bool) {
			s := which(t)
			if s == nil || s.Seconds <= 0 {
				return 0, false
			}
			return float64(s.Events) / s.Seconds, true
		}
	}
	// split gives the rows of a figure split by process: the total, the
	// edge's share and the agent's.
	split := func(label string, which func(*TargetResult) *Split, f func(float64) string) []ratioRow[TargetResult] {
		part := func(p func(*Split) *float64) func(*TargetResult) (float64, bool) {
			return func(t *TargetResult) (float64, bool) {
				s := which(t)
				if s == nil || p(s) == nil {
					return 0, false
				}
				return *p(s), true
			}
		}
		return []ratioRow[TargetResult]{
			{label + ", total", part(func(s *Split) *float64 { return &s.Total }), f},
			{label + ", edge", part(func(s *Split) *float64 { return s.Edge }), f},
			{label + ", agent", part(func(s *Split) *float64 { return s.Agent }), f},
		}
	}
	cpu := func(which func(*CPUResult) *Split) func(*TargetResult) *Split {
		return func(t *TargetResult) *Split {
			if t.CPU == nil {
				return nil
			}
			return which(t.CPU)
		}
	}
	cpuS := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	cpuUs := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	c := r.Config
	manyLabel := fmt.Sprintf("%d streams %s", c.SSEStreams, perStream(time.Duration(c.SSEIntervalMs*1e6)))
	rows := []ratioRow[TargetResult]{
		{"download MB/s", func(t *TargetResult) (float64, bool) {
			if t.Download == nil {
				return 0, false
			}
			return t.Download.MBps, true
		}, mbps},
		{"upload MB/s", func(t *TargetResult) (float64, bool) {
			if t.Upload == nil {
				return 0, false
			}
			return t.Upload.MBps, true
		}, mbps},
	}
	rows = append(rows, split("CPU s per GiB downloaded", cpu(func(c *CPUResult) *Split { return c.DownloadSPerGiB }), cpuS)...)
	rows = append(rows, split("CPU s per GiB uploaded", cpu(func(c *CPUResult) *Split { return c.UploadSPerGiB }), cpuS)...)
	rows = append(rows, []ratioRow[TargetResult]{
		{fmt.Sprintf("small req/s (%d clients)", c.Clients), func(t *TargetResult) (float64, bool) {
			if t.Small == nil {
				return 0, false
			}
			return t.Small.ReqPerSec, true
		}, mbps},
		{"small latency p50 ms", func(t *TargetResult) (float64, bool) {
			if t.Small == nil {
				return 0, false
			}
			return t.Small.P50Ms, true
		}, ms},
		{"small latency p99 ms", func(t *TargetResult) (float64, bool) {
			if t.Small == nil {
				return 0, false
			}
			return t.Small.P99Ms, true
		}, ms},
	}...)
	rows = append(rows, split("CPU µs per small request", cpu(func(c *CPUResult) *Split { return c.SmallUsPerReq }), cpuUs)...)
	paired := func(v func(*PairedResult) float64) func(*TargetResult) (float64, bool) {
		return func(t *TargetResult) (float64, bool) {
			if t.Paired == nil {
				return 0, false
			}
			return v(t.Paired), true
		}
	}
	rows = append(rows, []ratioRow[TargetResult]{
		{"paired with the relays: CPU µs per small request", paired(func(p *PairedResult) float64 { return p.UsPerReq }), cpuUs},
		{"paired with the relays: the relays' CPU µs then", paired(func(p *PairedResult) float64 { return p.RelaysUsPerReq }), cpuUs},
		{"paired with the relays: CPU × the relays'", paired(func(p *PairedResult) float64 { return p.CPURatio }), ratio},
		{"paired with the relays: req/s × the relays'", paired(func(p *PairedResult) float64 { return p.ReqRatio }), ratio},
	}...)
	rows = append(rows, []ratioRow[TargetResult]{
		{"SSE delay p50 ms, 1 stream", sse(one, false), ms},
		{"SSE delay p99 ms, 1 stream", sse(one, true), ms},
		{"SSE events/s delivered, " + manyLabel, events(many), mbps},
		{"SSE delay p50 ms, " + manyLabel, sse(many, false), ms},
		{"SSE delay p99 ms, " + manyLabel, sse(many, true), ms},
	}...)
	if c.SSEPacedIntervalMs > 0 {
		pacedLabel := fmt.Sprintf("%d streams %s", c.SSEStreams, perStream(time.Duration(c.SSEPacedIntervalMs*1e6)))
		rows = append(rows, []ratioRow[TargetResult]{
			{"SSE events/s delivered, " + pacedLabel, events(paced), mbps},
			{"SSE delay p50 ms, " + pacedLabel, sse(paced, false), ms},
			{"SSE delay p99 ms, " + pacedLabel, sse(paced, true), ms},
		}...)
	}
	return append(rows, split(fmt.Sprintf("memory KB per idle stream (%d)", c.MemStreams), func(t *TargetResult) *Split {
		if t.Memory == nil {
			return nil
		}
		return &t.Memory.ByRole
	}, kb)...)
}

// WriteTable writes the figures as a table, one row per figure and one
// column per target, each figure with its ratio to direct's, followed by
// notes.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice bench: loopback, %d CPUs, %s %s/%s", r.Env.CPUs, r.Env.GoVersion, r.Env.OS, r.Env.Arch)
	if r.Env.NginxVersion != "" {
		fmt.Fprintf(&b, ", nginx %s", r.Env.NginxVersion)
	}
	c := r.Config
	fmt.Fprintf(&b, "\n%s down and up; %d clients for %gs; SSE every %gms for %gs", byteSize(c.SizeBytes), c.Clients, c.DurationS, c.SSEIntervalMs, c.SSEDurationS)
	if c.SSEPacedIntervalMs > 0 {
		fmt.Fprintf(&b, " and every %gms for %gs", c.SSEPacedIntervalMs, c.SSEPacedDurationS)
	}
	fmt.Fprintf(&b, "; %d idle streams held %gs", c.MemStreams, c.MemSettleS)
	if c.Rounds > 1 {
		fmt.Fprintf(&b, "; each figure the median of %d rounds, the targets in turn in each", c.Rounds)
	}
	b.WriteString("\n\n")

	var direct *TargetResult
	for i := range r.Targets {
		if r.Targets[i].Name == "direct" {
			direct = &r.Targets[i]
		}
	}
	writeRatioTable(&b, r.Targets, func(t *TargetResult) string { return t.Name }, direct, r.rows(),
		func(t *TargetResult, label string) string {
			perProcess := strings.HasPrefix(label, "memory") || strings.HasPrefix(label, "CPU")
			split := strings.HasSuffix(label, ", edge") || strings.HasSuffix(label, ", agent")
			switch {
			case t.Name == "direct" && perProcess:
				return "n/a"
			case t.Error != "":
				return "failed"
			case t.Name == "nginx" && split:
				return "n/a"
			default:
				return "-"
			}
		})

	b.WriteString("\n(×: the figure over direct's. Higher is better for MB/s and req/s, lower for ms, KB and CPU.)\n")
	b.WriteString("memory and CPU: the target's processes: sluice's edge and agent, the two relays, frps and frpc, chisel's server and client, " +
		"nginx's master and workers (no edge or agent: n/a); direct is n/a, the upstream runs inside the benchmark process. " +
		"Edge is the process the clients connect to (relays: relay 1), agent the one that connects to the upstream. " +
		"Memory is VmRSS; CPU is user + system time from /proc/PID/stat (10 ms ticks) over the whole phase, " +
		"per GiB moved or per request answered (warm-up included).\n")
	b.WriteString("paired with the relays: each tunnel again, run at the same time as the relays, half the clients each, " +
		"each side's CPU per request read over the same seconds (both see the same machine, where the rows above meet it one after the other); " +
		"× the relays' is the ratio of the two sides.\n")
	for _, name := range slices.Sorted(maps.Keys(r.Skipped)) {
		fmt.Fprintf(&b, "%s: skipped: %s\n", name, r.Skipped[name])
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	for _, t := range r.Targets {
		if t.Error != "" {
			fmt.Fprintf(&b, "%s FAILED: %s\n", t.Name, t.Error)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func ratio(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

// ms formats milliseconds with three significant digits or so.
func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// protocolRow is one row of a table with a column per protocol.
type protocolRow[R any] struct {
	label string
	get   func(*R) string
}

// writeProtocolTable writes rows with a column per protocol result, "-"
// where a protocol's run failed, then the first line of each failure.
// about gives a result's protocol name and error.
func writeProtocolTable[R any](b *strings.Builder, results []R, about func(*R) (protocol, err string), rows []protocolRow[R], width int) {
	fmt.Fprintf(b, "%-42s", "")
	for i := range results {
		p, _ := about(&results[i])
		fmt.Fprintf(b, "%-*s", width, "sluice "+p)
	}
	b.WriteString("\n")
	for _, row := range rows {
		fmt.Fprintf(b, "%-42s", row.label)
		for i := range results {
			v := "-"
			if _, err := about(&results[i]); err == "" {
				v = row.get(&results[i])
			}
			fmt.Fprintf(b, "%-*s", width, v)
		}
		b.WriteString("\n")
	}
	for i := range results {
		if p, err := about(&results[i]); err != "" {
			first, _, _ := strings.Cut(err, "\n")
			fmt.Fprintf(b, "\nsluice %s FAILED: %s\n", p, first)
		}
	}
}
