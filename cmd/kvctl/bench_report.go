package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/histogram"
)

// passResult is the outcome of one pass, as -o json prints it.
type passResult struct {
	Mode       string `json:"mode"` // durability asked for: sync, async or default
	CommitMode string `json:"server_commit_mode"`
	// Ops counts successful requests, Errors failed ones; Reads is the
	// successful GETs among Ops.
	Ops        int64   `json:"ops"`
	Reads      int64   `json:"reads"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	// Latency of the successful requests, in microseconds.
	Latency latencyUS `json:"latency_us"`
	// Change of the server's counters over the pass.
	Fsyncs          uint64  `json:"fsyncs"`
	RecordsSynced   uint64  `json:"records_synced"`
	RecordsPerFsync float64 `json:"records_per_fsync"`
	DurationS       float64 `json:"duration_s"`
	Clients         int     `json:"clients"`
	Pipeline        int     `json:"pipeline"`
	ValueSize       int     `json:"value_size"`
	Keys            int     `json:"keys"`
	ReadRatio       float64 `json:"read_ratio"`
	Seed            uint64  `json:"seed"`
}

type latencyUS struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// summarize gathers the workers' results of a pass that took elapsed, with
// the server's status before and after it.
func summarize(cfg *benchConfig, mode client.Durability, workers []*benchWorker, elapsed time.Duration, before, after client.Status) passResult {
	var h histogram.Histogram
	r := passResult{
		Mode:       mode.String(),
		CommitMode: before.CommitMode,
		DurationS:  elapsed.Seconds(),
		Clients:    cfg.clients,
		Pipeline:   cfg.pipeline,
		ValueSize:  cfg.valueSize,
		Keys:       cfg.keys,
		ReadRatio:  cfg.readRatio,
		Seed:       cfg.seed,
	}
	for _, w := range workers {
		h.Merge(&w.hist)
		r.Ops += w.ok.Load()
		r.Errors += w.failed.Load()
		r.Reads += w.reads
		if r.FirstError == "" && w.firstErr != nil {
			r.FirstError = w.firstErr.Error()
		}
	}
	if elapsed > 0 {
		r.OpsPerSec = float64(r.Ops) / elapsed.Seconds()
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	r.Latency = latencyUS{
		P50:  us(h.Quantile(0.5)),
		P90:  us(h.Quantile(0.9)),
		P99:  us(h.Quantile(0.99)),
		P999: us(h.Quantile(0.999)),
		Max:  us(h.Max()),
		Mean: us(h.Mean()),
	}
	// A server restarted during the pass starts its counters again.
	if after.Fsyncs >= before.Fsyncs && after.RecordsSynced >= before.RecordsSynced {
		r.Fsyncs = after.Fsyncs - before.Fsyncs
		r.RecordsSynced = after.RecordsSynced - before.RecordsSynced
	}
	if r.Fsyncs > 0 {
		r.RecordsPerFsync = float64(r.RecordsSynced) / float64(r.Fsyncs)
	}
	return r
}

// writeBenchText prints the results as a table with a column per pass and,
// for a sync and an async pass, a line comparing them.
func writeBenchText(w io.Writer, addr string, cfg *benchConfig, results []passResult) error {
	var b strings.Builder
	length := cfg.duration.String() + " per pass"
	if cfg.requests > 0 {
		length = group(cfg.requests) + " requests per pass"
	}
	if cfg.warmup > 0 {
		length += " after " + cfg.warmup.String() + " of warm-up"
	}
	fmt.Fprintf(&b, "kvctl bench: %s (server commit mode %s)\n", addr, results[0].CommitMode)
	clients := "1 client"
	if cfg.clients != 1 {
		clients = group(int64(cfg.clients)) + " clients"
	}
	fmt.Fprintf(&b, "%s, pipeline %d, %d-byte values, %s keys, %s%% reads, %s, seed %d\n\n",
		clients, cfg.pipeline, cfg.valueSize, group(int64(cfg.keys)),
		strconv.FormatFloat(cfg.readRatio*100, 'f', -1, 64), length, cfg.seed)

	rows := [][]string{{""}}
	add := func(label string, cell func(r passResult) string) {
		row := []string{label}
		for _, r := range results {
			row = append(row, cell(r))
		}
		rows = append(rows, row)
	}
	for _, r := range results {
		rows[0] = append(rows[0], r.Mode)
	}
	add("ops", func(r passResult) string { return group(r.Ops) })
	add("ops/s", func(r passResult) string { return group(int64(math.Round(r.OpsPerSec))) })
	if cfg.readRatio > 0 {
		add("reads", func(r passResult) string { return group(r.Reads) })
	}
	add("errors", func(r passResult) string { return group(r.Errors) })
	for _, q := range []struct {
		name string
		v    func(l latencyUS) float64
	}{
		{"p50", func(l latencyUS) float64 { return l.P50 }},
		{"p90", func(l latencyUS) float64 { return l.P90 }},
		{"p99", func(l latencyUS) float64 { return l.P99 }},
		{"p99.9", func(l latencyUS) float64 { return l.P999 }},
		{"max", func(l latencyUS) float64 { return l.Max }},
		{"mean", func(l latencyUS) float64 { return l.Mean }},
	} {
		add("latency "+q.name, func(r passResult) string { return formatMicros(q.v(r.Latency)) })
	}
	add("fsyncs", func(r passResult) string { return group(int64(r.Fsyncs)) })
	add("records/fsync", func(r passResult) string {
		if r.Fsyncs == 0 {
			return "-"
		}
		return strconv.FormatFloat(r.RecordsPerFsync, 'f', 2, 64)
	})
	writeTable(&b, rows)

	for _, r := range results {
		if r.FirstError != "" {
			fmt.Fprintf(&b, "%s: %s errors, the first: %s\n", r.Mode, group(r.Errors), r.FirstError)
		}
	}
	if line := compareModes(results); line != "" {
		b.WriteString("\n" + line + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeTable writes rows with the first column aligned left and the others
// right.
func writeTable(b *strings.Builder, rows [][]string) {
	var widths []int
	for _, row := range rows {
		for i, cell := range row {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	for _, row := range rows {
		for i, cell := range row {
			if i == 0 {
				fmt.Fprintf(b, "%-*s", widths[0], cell)
			} else {
				fmt.Fprintf(b, "  %*s", widths[i], cell)
			}
		}
		b.WriteString("\n")
	}
}

// compareModes returns a line comparing the async pass with the sync pass,
// or "" unless there is one of each.
func compareModes(results []passResult) string {
	var s, a *passResult
	for i := range results {
		switch results[i].Mode {
		case "sync":
			s = &results[i]
		case "async":
			a = &results[i]
		}
	}
	if s == nil || a == nil || s.OpsPerSec == 0 {
		return ""
	}
	return fmt.Sprintf("async vs sync: %.2fx the throughput (%s vs %s ops/s), p50 %s vs %s",
		a.OpsPerSec/s.OpsPerSec, group(int64(math.Round(a.OpsPerSec))), group(int64(math.Round(s.OpsPerSec))),
		formatMicros(a.Latency.P50), formatMicros(s.Latency.P50))
}

// formatMicros formats a number of microseconds with three significant
// digits and a unit: 850ns, 61.2µs, 1.93ms, 2.10s.
func formatMicros(us float64) string {
	// The thresholds are those of the rounded value.
	switch {
	case us < 0.9995:
		return strconv.FormatFloat(us*1000, 'f', 0, 64) + "ns"
	case us < 999.5:
		return sig3(us) + "µs"
	case us < 999.5e3:
		return sig3(us/1e3) + "ms"
	}
	return sig3(us/1e6) + "s"
}

func sig3(x float64) string {
	switch {
	case x < 9.995:
		return strconv.FormatFloat(x, 'f', 2, 64)
	case x < 99.95:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strconv.FormatFloat(x, 'f', 0, 64)
}

// group formats n with a comma every three digits.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// benchProgress prints a progress line on a terminal; nil prints nothing.
type benchProgress struct {
	w     io.Writer
	label string
}

// progressInterval is how often the progress line is updated.
const progressInterval = 250 * time.Millisecond

func progressTo(on bool, e *env, label string) *benchProgress {
	if !on {
		return nil
	}
	return &benchProgress{w: e.stderr, label: label}
}

// start updates the progress line of pass p, started at start, until the
// returned function is called; that clears the line.
func (pr *benchProgress) start(p *benchPass, workers []*benchWorker, start time.Time) (stop func()) {
	if pr == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		var last int64
		lastAt := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				var ok, failed int64
				for _, w := range workers {
					ok += w.ok.Load()
					failed += w.failed.Load()
				}
				rate := float64(ok+failed-last) / now.Sub(lastAt).Seconds()
				last, lastAt = ok+failed, now
				fmt.Fprint(pr.w, "\r\x1b[2K"+progressLine(pr.label, p, now.Sub(start), ok+failed, failed, rate))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		fmt.Fprint(pr.w, "\r\x1b[2K")
	}
}

// progressLine describes a pass that has run for elapsed and completed done
// requests, failed of them, at rate requests per second lately.
func progressLine(label string, p *benchPass, elapsed time.Duration, done, failed int64, rate float64) string {
	var where string
	if p.requests {
		where = fmt.Sprintf("%s of %s requests", group(done), group(p.cfg.requests))
	} else {
		where = fmt.Sprintf("%s of %s, %s requests", elapsed.Round(100*time.Millisecond), p.length, group(done))
	}
	return fmt.Sprintf("%s: %s, %s/s, %s errors", label, where, group(int64(math.Round(rate))), group(failed))
}
