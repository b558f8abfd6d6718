package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// The loads of TestMemoryUnderHostileClients.
const (
	bigValue     = 16 << 20 // the largest value kvd accepts by default
	bigKeys      = 4        // values of bigValue under "huge:"
	listReaders  = 8        // concurrent readers paging through them
	slowUploads  = 3000     // HTTP PUTs that declare bigValue and stall
	halfSentRESP = 20       // RESP SETs of bigValue cut in the middle
	graceFlag    = 5 * time.Second
)

// peakBound is what kvd's peak resident memory must stay under, whatever
// the loads above do at once. Each load is bounded on its own: a list
// request holds one value at a time (listReaders x 16 MiB), slow uploads
// hold what they sent and their connection's buffers (about 33 KiB each),
// half-sent RESP values hold at most --resp-pending-bytes (128 MiB)
// together. Then the store holds the 64 MiB of values written and copies
// of them in the log (about 300 MiB after writing them, before any of
// the loads), and Go's collector lets the heap grow to three times what is
// live (GOGC=200) between collections. Measured: about 900 MiB.
const peakBound = 1536 << 20

func rss(t *testing.T, p *kvtest.Proc, what string) kvtest.Memory {
	t.Helper()
	m, err := kvtest.ReadMemory(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%-40s VmRSS %4d MiB, VmHWM %4d MiB", what, m.RSS>>20, m.Peak>>20)
	return m
}

// TestMemoryUnderHostileClients runs at once: readers listing 16 MiB
// values, 3,000 HTTP uploads that stall after their headers, and 20 RESP
// SETs of 16 MiB values cut in the middle. kvd's peak resident memory stays
// under peakBound, and a SIGTERM in the middle of it all stops kvd with
// status 0 and "kvd stopped" within the grace period.
func TestMemoryUnderHostileClients(t *testing.T) {
	if runtime.GOOS != "linux" {
		kvtest.Require(t, "reads /proc/PID/status")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 2*slowUploads+1000 {
		kvtest.Require(t, fmt.Sprintf("needs %d file descriptors (ulimit -n is %d)", 2*slowUploads+1000, lim.Cur))
	}
	// A long rate window, so that the slow uploads are still open at the
	// SIGTERM (server tests check that they are cut).
	p := startKVD(t, "", "--shutdown-timeout", graceFlag.String(), "--http-rate-window", "60s")
	rss(t, p, "started")

	c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	value := bytes.Repeat([]byte("v"), bigValue)
	for i := range bigKeys {
		if err := c.Put(t.Context(), fmt.Sprintf("huge:%d", i), value); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	rss(t, p, fmt.Sprintf("%d values of 16 MiB written", bigKeys))

	// 3,000 uploads that declare 16 MiB, send 1 KiB and stall.
	var conns []net.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for i := range slowUploads {
		nc, err := net.Dial("tcp", p.HTTPAddr)
		if err != nil {
			t.Fatalf("slow upload %d: %v", i, err)
		}
		conns = append(conns, nc)
		fmt.Fprintf(nc, "PUT /v1/kv/slow:%d HTTP/1.1\r\nHost: kvd\r\nContent-Length: %d\r\n\r\n%s",
			i, bigValue, strings.Repeat("s", 1024))
	}
	rss(t, p, fmt.Sprintf("%d slow uploads", slowUploads))

	// 20 RESP SETs of 16 MiB, cut after 8 MiB.
	for i := range halfSentRESP {
		nc, err := net.Dial("tcp", p.RESPAddr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
		fmt.Fprintf(nc, "*3\r\n$3\r\nSET\r\n$7\r\nhalf:%02d\r\n$%d\r\n", i, bigValue)
		nc.SetWriteDeadline(time.Now().Add(20 * time.Second))
		nc.Write(value[:bigValue/2]) // a refused client is closed: the write may fail
	}
	// Wait until kvd has read them: INFO's pending_request_bytes holds
	// what the ones within the budget hold.
	admin, err := client.Dial(t.Context(), p.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	pending := pendingRequestBytes(t, admin)
	kvtest.Eventually(t, 20*time.Second, "kvd to buffer the half-sent values", func() bool {
		pending = pendingRequestBytes(t, admin)
		return pending >= 64<<20
	})
	rss(t, p, fmt.Sprintf("%d half-sent RESP values (%d MiB held)", halfSentRESP, pending>>20))

	// Readers page through the 16 MiB values, one per page.
	var wg sync.WaitGroup
	var listed atomic.Int64
	var listErr atomic.Value
	hc := &http.Client{Timeout: 30 * time.Second}
	for range listReaders {
		wg.Go(func() {
			after := ""
			for {
				res, err := hc.Get("http://" + p.HTTPAddr + "/v1/kv?prefix=huge:&limit=100&after=" + after)
				if err != nil {
					listErr.Store(err)
					return
				}
				n, more, last, err := readListPage(res.Body)
				res.Body.Close()
				if err != nil {
					listErr.Store(err)
					return
				}
				listed.Add(int64(n))
				if !more {
					return
				}
				after = last
			}
		})
	}
	wg.Wait()
	if err, _ := listErr.Load().(error); err != nil {
		t.Fatalf("listing: %v", err)
	}
	if got := listed.Load(); got != listReaders*bigKeys {
		t.Errorf("listed %d items, want %d", got, listReaders*bigKeys)
	}
	m := rss(t, p, fmt.Sprintf("%d readers listed every value", listReaders))
	if m.Peak > peakBound {
		t.Errorf("peak resident memory %d MiB, want under %d MiB", m.Peak>>20, peakBound>>20)
	}

	// SIGTERM with the slow clients still connected.
	start := time.Now()
	if err := p.Stop(syscall.SIGTERM, graceFlag+20*time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.Log())
	}
	took := time.Since(start)
	t.Logf("stopped in %v (grace %v)", took.Round(time.Millisecond), graceFlag)
	if code := p.ExitCode(); code != 0 {
		t.Errorf("kvd exited %d on SIGTERM, want 0\n%s", code, p.Log())
	}
	if !strings.Contains(p.Log(), "kvd stopped") {
		t.Errorf("no \"kvd stopped\" in the log:\n%s", p.Log())
	}
	if took > graceFlag+10*time.Second {
		t.Errorf("kvd took %v to stop, grace period %v", took, graceFlag)
	}
}

func pendingRequestBytes(t *testing.T, c *client.Client) int64 {
	t.Helper()
	info, err := c.Info(t.Context(), "clients")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "pending_request_bytes:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("INFO clients has no pending_request_bytes:\n%s", info)
	return 0
}

// readListPage reads a GET /v1/kv reply: it returns the number of items,
// "more" and the last key.
func readListPage(r io.Reader) (n int, more bool, last string, err error) {
	var page struct {
		Items []struct {
			Key  string `json:"key"`
			Size int    `json:"size"`
		} `json:"items"`
		More bool `json:"more"`
	}
	if err := json.NewDecoder(r).Decode(&page); err != nil {
		return 0, false, "", err
	}
	for _, it := range page.Items {
		if it.Size != bigValue {
			return 0, false, "", fmt.Errorf("item %s of size %d, want %d", it.Key, it.Size, bigValue)
		}
	}
	if len(page.Items) > 0 {
		last = page.Items[len(page.Items)-1].Key
	}
	return len(page.Items), page.More, last, nil
}
