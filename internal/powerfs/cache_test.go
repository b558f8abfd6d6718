package powerfs_test

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

// TestReadersSeeWritesIntoZeroedPages: a file zero-filled ahead of its
// end, as kvd's log preallocates its tail, is written in small records
// while another handle reads each record once its write(2) has returned,
// as Raft's replication reads the log behind the writer. Every read sees
// what was written: the kernel's page cache must not be left holding the
// zeros. With automatic data cache invalidation the kernel, finding the
// file's mtime changed, dropped pages that a write was filling, and a
// concurrent read refilled them from powerfs before the write reached it.
// An open(2) without FOPEN_KEEP_CACHE drops the file's cached pages the
// same way: the "reopen" runs read through a handle opened again every 16
// reads, as the log's Read opens a segment it has let go of.
func TestReadersSeeWritesIntoZeroedPages(t *testing.T) {
	for attempt := range 10 {
		reopen := attempt%2 == 1
		name := fmt.Sprint(attempt)
		if reopen {
			name += "/reopen"
		}
		t.Run(name, func(t *testing.T) {
			r := newRig(t, nil)
			w, err := os.Create(r.path("log"))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			const records, zeroAhead = 15000, 1 << 20
			var (
				mu      sync.Mutex
				want    []byte
				written atomic.Int64 // bytes whose write(2) returned
				stop    atomic.Bool
			)
			errc := make(chan error, 1)
			go func() {
				errc <- func() error {
					rd, err := os.Open(r.path("log"))
					if err != nil {
						return err
					}
					defer func() { rd.Close() }()
					buf := make([]byte, 4096)
					reads := 0
					for read := 0; !stop.Load() || read < int(written.Load()); {
						end := int(written.Load())
						for read < end {
							if reads++; reopen && reads%16 == 0 {
								rd.Close()
								if rd, err = os.Open(r.path("log")); err != nil {
									return err
								}
							}
							m, err := rd.ReadAt(buf, int64(read))
							if m == 0 {
								return fmt.Errorf("read at %d: %v", read, err)
							}
							n := min(m, end-read)
							mu.Lock()
							ok := bytes.Equal(buf[:n], want[read:read+n])
							mu.Unlock()
							if !ok {
								return fmt.Errorf("a read at %d, after the write of bytes up to %d returned, saw other bytes than were written", read, end)
							}
							read += n
						}
					}
					return nil
				}()
			}()
			zeroed := 0
			for i := range records {
				if zeroed < len(want)+zeroAhead/2 {
					target := (len(want) + zeroAhead) &^ 4095
					if _, err := w.WriteAt(make([]byte, target-zeroed), int64(zeroed)); err != nil {
						t.Fatal(err)
					}
					zeroed = target
				}
				rec := bytes.Repeat([]byte{byte(i%250 + 1)}, 60+i%17)
				mu.Lock()
				off := len(want)
				want = append(want, rec...)
				mu.Unlock()
				if _, err := w.WriteAt(rec, int64(off)); err != nil {
					t.Fatal(err)
				}
				written.Store(int64(off + len(rec)))
			}
			stop.Store(true)
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}
