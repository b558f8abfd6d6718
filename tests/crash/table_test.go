package crash_test

import (
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"
)

// resultTable collects, per fault and mode, what the suite did; TestMain
// prints it when the run ends. "recovered by cutting" counts the starts
// after a fault at which kvd logged that it cut its log to recover
// (DESIGN.md §1: a crash's leftovers are cut at startup, never left to an
// operator); "-" where the row started kvd on nothing it could cut.
type resultTable struct {
	mu   sync.Mutex
	rows []*resultRow
}

type resultRow struct {
	t          *resultTable
	fault      string
	mode       string
	cycles     int
	acked      int           // acknowledged writes checked
	revKnown   int           // of them, with a known revision
	lost       int           // acknowledged writes not recovered
	maxLoss    time.Duration // largest async loss seen
	lossBound  time.Duration // the bound that applied to it
	violations int
	// starts counts the starts of kvd after a fault whose log the row
	// looked at for a recovery cut, cuts those where kvd logged one.
	starts, cuts int
	note         string
}

func newResultTable() *resultTable { return &resultTable{} }

// row returns the row of fault and mode, creating it.
func (t *resultTable) row(fault, mode string) *resultRow {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.rows {
		if r.fault == fault && r.mode == mode {
			return r
		}
	}
	r := &resultRow{t: t, fault: fault, mode: mode}
	t.rows = append(t.rows, r)
	return r
}

// add counts one cycle and what its check found.
func (r *resultRow) add(v verdict, bound time.Duration) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.cycles++
	r.acked += v.okWrites
	r.revKnown += v.revKnown
	r.lost += len(v.lost)
	r.violations += len(v.violations)
	if v.maxLoss > r.maxLoss {
		r.maxLoss, r.lossBound = v.maxLoss, bound
	}
	if r.lossBound == 0 {
		r.lossBound = bound
	}
}

// count counts cycles that are not load-and-check cycles (a corrupted file
// started on): acked writes checked and violations found.
func (r *resultRow) count(acked, violations int) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.cycles++
	r.acked += acked
	r.violations += violations
}

// violated counts violations found outside a cycle.
func (r *resultRow) violated(n int) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.violations += n
}

// recovered counts one start of kvd after a fault, and whether kvd logged
// that it cut the log to recover.
func (r *resultRow) recovered(cut bool) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.starts++
	if cut {
		r.cuts++
	}
}

// fail counts a violation that ended the test before a check, and says why.
func (r *resultRow) fail(format string, args ...any) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.violations++
	r.note = fmt.Sprintf(format, args...)
}

func (r *resultRow) setNote(format string, args ...any) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.note = fmt.Sprintf(format, args...)
}

func (t *resultTable) print(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(w, "\ncrash suite results (seed %d, %s pass)\n", suiteSeed, passName())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tmode\tcycles\tacked writes checked\twrites lost\tlargest async loss / bound\trecovered by cutting\tviolations\tnote")
	for _, r := range t.rows {
		loss := "-"
		if r.lossBound > 0 {
			loss = fmt.Sprintf("%v / %v", r.maxLoss.Round(10*time.Microsecond), r.lossBound.Round(10*time.Microsecond))
		}
		cuts := "-"
		if r.starts > 0 {
			cuts = fmt.Sprint(r.cuts)
		}
		note := r.note
		if r.revKnown > 0 {
			if note != "" {
				note += "; "
			}
			note += fmt.Sprintf("revision known for %d%% of acked writes", 100*r.revKnown/r.acked)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d\t%s\n", r.fault, r.mode, r.cycles, r.acked, r.lost, loss, cuts, r.violations, note)
	}
	tw.Flush()
}
