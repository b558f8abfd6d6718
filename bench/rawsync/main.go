// Command rawsync measures the floor of a sync commit on this machine: it
// appends record-sized blocks to a file and fdatasyncs after each, and
// prints ops/s and latency percentiles. bench/compare.sh runs it. With
// --overwrite it writes over a zero-filled file that was synced first, so
// no fdatasync has a file size or block allocation to commit.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/kvdstore/kvd/internal/histogram"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rawsync:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := pflag.NewFlagSet("rawsync", pflag.ContinueOnError)
	dir := fs.String("dir", os.TempDir(), "directory to write the test file in")
	n := fs.Int("n", 3000, "number of write+fdatasync operations")
	size := fs.Int("size", 140, "bytes per write (a 100-byte value plus framing)")
	overwrite := fs.Bool("overwrite", false, "overwrite a zero-filled, already synced file instead of appending")
	if err := fs.Parse(args); err != nil {
		return err
	}
	path := filepath.Join(*dir, fmt.Sprintf("rawsync-%d", os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, *size)
	if *overwrite {
		if _, err := f.Write(make([]byte, *n**size)); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if _, err := f.Seek(0, 0); err != nil {
			return err
		}
	}
	var h histogram.Histogram
	start := time.Now()
	for range *n {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return err
		}
		h.Record(time.Since(t0))
	}
	elapsed := time.Since(start)
	fmt.Printf("ops_per_sec=%.0f p50_us=%.0f p99_us=%.0f\n", float64(*n)/elapsed.Seconds(),
		float64(h.Quantile(0.5).Microseconds()), float64(h.Quantile(0.99).Microseconds()))
	return nil
}
